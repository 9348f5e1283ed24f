//! The signals that stop `up` (and `meshwork guard`), caught from the first moment.
//!
//! Installed before the first child is spawned: a Ctrl-C during startup must reach `up`'s
//! stop path, not the default action (which would end `up` at once and leave the children
//! it had started behind).

use tokio::signal::unix::{Signal, SignalKind, signal};

/// SIGINT, SIGTERM and SIGHUP (the terminal went away), each caught.
pub struct StopSignals {
    int: Signal,
    term: Signal,
    hup: Signal,
}

impl StopSignals {
    /// Installs the handlers; from here on these signals only queue for [`StopSignals::recv`].
    pub fn install() -> std::io::Result<StopSignals> {
        Ok(StopSignals {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// The next stop signal, by name.
    pub async fn recv(&mut self) -> Caught {
        tokio::select! {
            _ = self.int.recv() => Caught::Int,
            _ = self.term.recv() => Caught::Term,
            _ = self.hup.recv() => Caught::Hup,
        }
    }
}

/// Which stop signal arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caught {
    /// SIGINT (Ctrl-C).
    Int,
    /// SIGTERM.
    Term,
    /// SIGHUP.
    Hup,
}

impl Caught {
    /// The conventional exit status of a program stopped by this signal (128 + N).
    pub fn exit_status(self) -> u8 {
        128 + match self {
            Caught::Int => 2,
            Caught::Term => 15,
            Caught::Hup => 1,
        }
    }
}

impl std::fmt::Display for Caught {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Caught::Int => "SIGINT",
            Caught::Term => "SIGTERM",
            Caught::Hup => "SIGHUP",
        })
    }
}
