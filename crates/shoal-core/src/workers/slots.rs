//! The table of the pool's scheduler slots: which worker place and lane each slot
//! belongs to, and each place's slots, lane 0 first. Places are added and removed
//! while tasks run (a live change of the pool's size), so a slot's worker is looked
//! up here, never computed from its number. Pure bookkeeping: no processes, no
//! scheduler calls.

use crate::task::SlotId;

/// Where a scheduler slot leads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Lane {
    /// The worker place (index into the driver's places).
    pub worker: usize,
    /// 0 is the worker's first lane; the others open only while prefetching.
    pub lane: usize,
}

/// Slot -> (worker place, lane), and place -> slots.
#[derive(Debug, Default)]
pub(super) struct SlotTable {
    /// Indexed by `slot - 1`.
    lanes: Vec<Lane>,
    /// Indexed by place: its slots, lane 0 first.
    slots: Vec<Vec<SlotId>>,
}

impl SlotTable {
    /// `workers` places of `lanes` slots each, numbered as the scheduler's first
    /// `workers * lanes` slots: slots `1..=workers` are each place's first lane, the
    /// next `workers` their second, and so on (a small pool fills its first lanes
    /// first, which the scheduler polls first).
    pub fn new(workers: usize, lanes: usize) -> Self {
        let mut table = SlotTable {
            lanes: Vec::with_capacity(workers * lanes),
            slots: vec![Vec::with_capacity(lanes); workers],
        };
        for lane in 0..lanes {
            for worker in 0..workers {
                table.lanes.push(Lane { worker, lane });
                table.slots[worker].push(table.lanes.len());
            }
        }
        table
    }

    /// Adds a place whose `lanes` slots are the next slot numbers; returns its index.
    pub fn add_place(&mut self, lanes: usize) -> usize {
        let worker = self.slots.len();
        let first = self.lanes.len() + 1;
        self.lanes.extend((0..lanes).map(|lane| Lane { worker, lane }));
        self.slots.push((first..first + lanes).collect());
        worker
    }

    /// The worker place and lane of `slot`.
    ///
    /// # Panics
    /// If the slot is not in the table: a bug in the driver.
    pub fn lane(&self, slot: SlotId) -> Lane {
        self.lanes[slot - 1]
    }

    /// The worker place of `slot`.
    pub fn worker_of(&self, slot: SlotId) -> usize {
        self.lane(slot).worker
    }

    /// A place's slots, lane 0 first.
    pub fn slots_of(&self, worker: usize) -> &[SlotId] {
        &self.slots[worker]
    }

    /// Number of slots: the scheduler must hold this many.
    pub fn slot_count(&self) -> usize {
        self.lanes.len()
    }
}

#[cfg(test)]
mod tests {
    use super::{Lane, SlotTable};

    #[test]
    fn first_lanes_come_first_and_every_slot_has_one_place() {
        let table = SlotTable::new(3, 2);
        assert_eq!(table.slot_count(), 6);
        assert_eq!(table.slots_of(0), [1, 4]);
        assert_eq!(table.slots_of(2), [3, 6]);
        assert_eq!(table.lane(5), Lane { worker: 1, lane: 1 });
        for slot in 1..=6 {
            let Lane { worker, lane } = table.lane(slot);
            assert_eq!(table.slots_of(worker)[lane], slot);
        }
    }

    #[test]
    fn an_added_place_takes_the_next_slot_numbers() {
        let mut table = SlotTable::new(2, 2);
        assert_eq!(table.add_place(2), 2);
        assert_eq!(table.slots_of(2), [5, 6]);
        assert_eq!(table.lane(6), Lane { worker: 2, lane: 1 });
        assert_eq!(table.worker_of(5), 2);
        assert_eq!(table.slot_count(), 6);
    }
}
