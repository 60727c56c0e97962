//! `shoal store init`: creates a store's tables unless they are there, and says which.

use shoal_core::store::postgres::{self, schema::Init};
use shoal_core::store::{Store, StoreAddress};

/// Creates the tables of the store at `store` (idempotent) and says what it did.
pub fn init(store: &StoreAddress) -> anyhow::Result<()> {
    match store {
        StoreAddress::Postgres(_) => match postgres::init(store)? {
            Init::Created(version) => {
                println!("created the shoal tables (schema version {version}) in {store}")
            }
            Init::Present(version) => println!(
                "{store} already holds the shoal tables (schema version {version}): nothing to do"
            ),
            Init::Migrated { from, to } => {
                println!("migrated the shoal tables of {store} from schema version {from} to {to}")
            }
        },
        StoreAddress::Sqlite(path) => {
            let existed = path.exists();
            Store::open(store)?;
            if existed {
                println!(
                    "{store} is a shoal store (schema version {}): nothing to do",
                    shoal_core::store::SCHEMA_VERSION
                );
            } else {
                println!("created the shoal store {store}");
            }
        }
    }
    Ok(())
}
