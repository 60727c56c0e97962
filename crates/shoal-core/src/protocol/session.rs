//! The engine's side of one worker's conversation, as a pure state machine: the
//! executor reports every message it sends ([`Conversation::sent`]) and receives
//! ([`Conversation::received`]), and gets an error for any message out of the
//! order `docs/protocol.md` allows. It does no I/O and keeps no clock: heartbeat
//! deadlines belong to the executor.
//!
//! Order: Hello (the version checked) → Welcome → at most one Init, answered by
//! InitDone, before any Run → Runs, each answered by one Result in the order sent
//! (several may be in flight) → Shutdown → the remaining Results → Bye. Heartbeats
//! may arrive any time between Welcome and Bye.

use std::collections::VecDeque;

use super::error::ProtocolError;
use super::message::{Message, Peer, PROTOCOL_VERSION};
use crate::task::TaskId;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    AwaitHello,
    AwaitWelcome,
    Open,
    ShuttingDown,
    Closed,
}

/// Where the initializer stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitState {
    /// No Init was sent (none may be sent once a Run has been).
    NotSent,
    /// Init sent, InitDone not yet received.
    Pending,
    /// InitDone with `ok`.
    Succeeded,
    /// InitDone without `ok`: the engine may only send Shutdown.
    Failed,
}

/// One worker's conversation as the engine sees it.
#[derive(Debug)]
pub struct Conversation {
    phase: Phase,
    init: InitState,
    /// Anything sent since Welcome (Init must come first).
    sent_since_welcome: bool,
    /// `(task, attempt)` of the Runs sent and not yet answered, oldest first.
    in_flight: VecDeque<(TaskId, u32)>,
}

impl Default for Conversation {
    fn default() -> Self {
        Conversation::new()
    }
}

impl Conversation {
    /// A conversation with a worker just spawned: its Hello comes first.
    pub fn new() -> Self {
        Conversation {
            phase: Phase::AwaitHello,
            init: InitState::NotSent,
            sent_since_welcome: false,
            in_flight: VecDeque::new(),
        }
    }

    /// The initializer's state.
    pub fn init(&self) -> InitState {
        self.init
    }

    /// The Runs sent and not yet answered, oldest first: the worker is running the
    /// first; it has not started the others.
    pub fn in_flight(&self) -> impl ExactSizeIterator<Item = (TaskId, u32)> + '_ {
        self.in_flight.iter().copied()
    }

    /// Bye was received: the end of the stream is expected now.
    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    fn state(&self) -> &'static str {
        match self.phase {
            Phase::AwaitHello => "before the worker's Hello",
            Phase::AwaitWelcome => "before Welcome",
            Phase::Open => match self.init {
                InitState::Pending => "while the initializer runs",
                InitState::Failed => "after the initializer failed",
                _ if self.sent_since_welcome => "after the first Init or Run",
                _ => "right after Welcome",
            },
            Phase::ShuttingDown => "after Shutdown",
            Phase::Closed => "after Bye",
        }
    }

    fn out_of_order(&self, message: &Message) -> ProtocolError {
        ProtocolError::OutOfOrder { message: message.kind().name(), state: self.state() }
    }

    /// Records a message the engine is about to send; an error means sending it
    /// would break the protocol (an engine bug), and nothing was recorded.
    pub fn sent(&mut self, message: &Message) -> Result<(), ProtocolError> {
        check_sender(message, Peer::Engine)?;
        let open = self.phase == Phase::Open;
        match message {
            Message::Welcome { .. } if self.phase == Phase::AwaitWelcome => {
                self.phase = Phase::Open;
                return Ok(());
            }
            Message::Init { .. } if open && !self.sent_since_welcome => {
                self.init = InitState::Pending;
            }
            Message::Run { task, attempt, .. }
                if open && matches!(self.init, InitState::NotSent | InitState::Succeeded) =>
            {
                self.in_flight.push_back((*task, *attempt));
            }
            Message::Shutdown if open => self.phase = Phase::ShuttingDown,
            Message::Welcome { .. } if self.phase != Phase::AwaitHello => {
                return Err(ProtocolError::OutOfOrder { message: "Welcome", state: "twice" })
            }
            _ => return Err(self.out_of_order(message)),
        }
        self.sent_since_welcome = true;
        Ok(())
    }

    /// Checks and records a message received from the worker.
    pub fn received(&mut self, message: &Message) -> Result<(), ProtocolError> {
        check_sender(message, Peer::Worker)?;
        let talking = matches!(self.phase, Phase::Open | Phase::ShuttingDown);
        match message {
            Message::Hello { protocol_version, .. } if self.phase == Phase::AwaitHello => {
                if *protocol_version != PROTOCOL_VERSION {
                    return Err(ProtocolError::IncompatibleVersion {
                        worker: *protocol_version,
                        engine: PROTOCOL_VERSION,
                    });
                }
                self.phase = Phase::AwaitWelcome;
            }
            Message::Heartbeat { .. } if talking => {}
            Message::InitDone { ok, .. } if talking && self.init == InitState::Pending => {
                self.init = if *ok { InitState::Succeeded } else { InitState::Failed };
            }
            Message::Result { task, attempt, .. } if talking => match self.in_flight.front() {
                Some(&(t, a)) if (t, a) == (*task, *attempt) => {
                    self.in_flight.pop_front();
                }
                Some(&(expected_task, expected_attempt)) => {
                    return Err(ProtocolError::ResultMismatch {
                        task: *task,
                        attempt: *attempt,
                        expected_task,
                        expected_attempt,
                    })
                }
                None => {
                    return Err(ProtocolError::OutOfOrder {
                        message: "Result",
                        state: "while no Run is in flight",
                    })
                }
            },
            Message::InitDone { .. } if talking => {
                return Err(ProtocolError::OutOfOrder {
                    message: "InitDone",
                    state: "when no Init is pending",
                })
            }
            Message::Hello { .. } if self.phase != Phase::Closed => {
                return Err(ProtocolError::OutOfOrder { message: "Hello", state: "twice" })
            }
            Message::Bye if self.phase == Phase::Open => {
                return Err(ProtocolError::OutOfOrder { message: "Bye", state: "before Shutdown" })
            }
            Message::Bye if self.phase == Phase::ShuttingDown => {
                if self.init == InitState::Pending || !self.in_flight.is_empty() {
                    return Err(ProtocolError::OutOfOrder {
                        message: "Bye",
                        state: "before the answers to every Init and Run sent",
                    });
                }
                self.phase = Phase::Closed;
            }
            _ => return Err(self.out_of_order(message)),
        }
        Ok(())
    }
}

fn check_sender(message: &Message, sender: Peer) -> Result<(), ProtocolError> {
    let kind = message.kind();
    if kind.sender() == sender {
        Ok(())
    } else {
        Err(ProtocolError::WrongSender { message: kind.name(), sender: kind.sender() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(version: u32) -> Message {
        Message::Hello { protocol_version: version, pid: 100, runtime: "python 3.11.7".into() }
    }

    fn welcome() -> Message {
        Message::Welcome { protocol_version: 1, worker_id: 1, heartbeat_ms: 500, config: vec![] }
    }

    fn run(task: TaskId, attempt: u32) -> Message {
        Message::Run { task, attempt, payload: vec![] }
    }

    fn result(task: TaskId, attempt: u32) -> Message {
        Message::Result { task, attempt, ok: true, payload: vec![], traceback: String::new() }
    }

    fn init_done(ok: bool) -> Message {
        Message::InitDone { ok, payload: vec![], traceback: String::new() }
    }

    fn welcomed() -> Conversation {
        let mut c = Conversation::new();
        c.received(&hello(1)).unwrap();
        c.sent(&welcome()).unwrap();
        c
    }

    #[test]
    fn a_whole_life_with_an_initializer_and_pipelined_runs() {
        let mut c = welcomed();
        c.received(&Message::Heartbeat { rss_bytes: 1 }).unwrap();
        c.sent(&Message::Init { payload: vec![] }).unwrap();
        assert_eq!(c.init(), InitState::Pending);
        c.received(&init_done(true)).unwrap();
        c.sent(&run(1, 1)).unwrap();
        c.sent(&run(2, 1)).unwrap();
        assert_eq!(c.in_flight().collect::<Vec<_>>(), [(1, 1), (2, 1)]);
        c.received(&result(1, 1)).unwrap();
        c.sent(&Message::Shutdown).unwrap();
        c.received(&Message::Heartbeat { rss_bytes: 1 }).unwrap();
        c.received(&result(2, 1)).unwrap();
        assert!(!c.is_closed());
        c.received(&Message::Bye).unwrap();
        assert!(c.is_closed());
    }

    #[test]
    fn an_incompatible_version_is_refused_by_number() {
        let err = Conversation::new().received(&hello(2)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the worker speaks protocol version 2; this engine speaks version 1"
        );
    }

    #[test]
    fn messages_out_of_order_are_errors_naming_the_state() {
        let mut fresh = Conversation::new();
        let err = fresh.received(&Message::Heartbeat { rss_bytes: 0 }).unwrap_err();
        assert_eq!(err.to_string(), "Heartbeat is not allowed before the worker's Hello");
        assert!(fresh.sent(&welcome()).is_err());

        let mut c = Conversation::new();
        c.received(&hello(1)).unwrap();
        let err = c.sent(&run(1, 1)).unwrap_err();
        assert_eq!(err.to_string(), "Run is not allowed before Welcome");
        assert_eq!(c.received(&hello(1)).unwrap_err().to_string(), "Hello is not allowed twice");

        let mut c = welcomed();
        c.sent(&run(1, 1)).unwrap();
        let err = c.sent(&Message::Init { payload: vec![] }).unwrap_err();
        assert_eq!(err.to_string(), "Init is not allowed after the first Init or Run");
        let err = c.received(&Message::Bye).unwrap_err();
        assert_eq!(err.to_string(), "Bye is not allowed before Shutdown");
        let err = c.received(&init_done(true)).unwrap_err();
        assert_eq!(err.to_string(), "InitDone is not allowed when no Init is pending");

        let mut c = welcomed();
        c.sent(&Message::Init { payload: vec![] }).unwrap();
        let err = c.sent(&run(1, 1)).unwrap_err();
        assert_eq!(err.to_string(), "Run is not allowed while the initializer runs");
        c.received(&init_done(false)).unwrap();
        let err = c.sent(&run(1, 1)).unwrap_err();
        assert_eq!(err.to_string(), "Run is not allowed after the initializer failed");
        c.sent(&Message::Shutdown).unwrap();
        let err = c.sent(&Message::Shutdown).unwrap_err();
        assert_eq!(err.to_string(), "Shutdown is not allowed after Shutdown");
        c.received(&Message::Bye).unwrap();
        let err = c.received(&Message::Heartbeat { rss_bytes: 0 }).unwrap_err();
        assert_eq!(err.to_string(), "Heartbeat is not allowed after Bye");
    }

    #[test]
    fn results_must_answer_the_oldest_run() {
        let mut c = welcomed();
        let err = c.received(&result(1, 1)).unwrap_err();
        assert_eq!(err.to_string(), "Result is not allowed while no Run is in flight");
        c.sent(&run(1, 1)).unwrap();
        c.sent(&run(2, 1)).unwrap();
        let err = c.received(&result(2, 1)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Result for task 2 attempt 1, but the oldest Run in flight is task 1 attempt 1"
        );
        c.sent(&Message::Shutdown).unwrap();
        c.received(&result(1, 1)).unwrap();
        let err = c.received(&Message::Bye).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Bye is not allowed before the answers to every Init and Run sent"
        );
    }

    #[test]
    fn each_side_sends_only_its_own_kinds() {
        let err = welcomed().received(&run(1, 1)).unwrap_err();
        assert_eq!(err.to_string(), "Run is sent only by the engine");
        let err = welcomed().sent(&Message::Bye).unwrap_err();
        assert_eq!(err.to_string(), "Bye is sent only by the worker");
    }
}
