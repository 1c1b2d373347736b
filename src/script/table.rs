//! The node table as the `Supervisor` module's functions reach it, with what a call
//! means at the moment (`Mode`): while the command-line scripts load, the nodes they
//! create are theirs (a reload may change them); afterwards nodes are created at run
//! time; and while a reload evaluates new scripts, creates are recorded instead of
//! carried out, and nothing else changes either, while `status` still sees the
//! running nodes.
//!
//! Each `Host` has its own `Table` over the one node table, so a reload's engine
//! records while the running engine's calls would still act, and switching a host's
//! table from recording to serving is all it takes to make its engine the live one.

use std::cell::RefCell;

use nix::sys::signal::Signal;

use super::Nodes;
use crate::config::{NodeConfig, Status};
use crate::supervisor::{CreateError, Origin, Placed, Recording};

/// What the table's calls do now.
#[derive(Debug)]
pub enum Mode {
    /// The command-line scripts load and their `zeek_init()` runs: the nodes created
    /// are the scripts' own.
    Loading,
    /// Anything later: nodes created are run-time nodes, which a reload leaves alone.
    Serving,
    /// A reload evaluates new scripts: creates are recorded here, and nothing changes.
    Recording(Recording),
}

/// The node table, through a mode.
pub struct Table {
    nodes: Nodes,
    mode: RefCell<Mode>,
}

impl Table {
    /// The table `nodes`, loading scripts.
    pub fn new(nodes: Nodes) -> Table {
        Table {
            nodes,
            mode: RefCell::new(Mode::Loading),
        }
    }

    /// The node table itself.
    pub fn nodes(&self) -> &Nodes {
        &self.nodes
    }

    /// Puts the table in `mode`; returns the mode it was in.
    pub fn set_mode(&self, mode: Mode) -> Mode {
        self.mode.replace(mode)
    }

    /// Whether creates are recorded rather than carried out.
    pub fn is_recording(&self) -> bool {
        matches!(*self.mode.borrow(), Mode::Recording(_))
    }

    /// `Supervisor::create`, as the mode says.
    pub fn create(&self, config: NodeConfig) -> Result<Placed, CreateError> {
        match &mut *self.mode.borrow_mut() {
            Mode::Recording(recording) => self.nodes.borrow().record(recording, config),
            Mode::Loading => self.nodes.borrow_mut().create_as(config, Origin::Script),
            Mode::Serving => self.nodes.borrow_mut().create_as(config, Origin::Run),
        }
    }

    /// Notes, while recording, a create that was refused (with where it was called).
    pub fn refused(&self, text: String) {
        if let Mode::Recording(recording) = &mut *self.mode.borrow_mut() {
            recording.refused(text);
        }
    }

    /// `Supervisor::destroy`; false, and nothing done, while recording.
    pub fn destroy(&self, name: &str) -> bool {
        !self.held_back("destroy") && self.nodes.borrow_mut().destroy(name)
    }

    /// `Supervisor::restart`; false, and nothing done, while recording.
    pub fn restart(&self, name: &str) -> bool {
        !self.held_back("restart") && self.nodes.borrow_mut().restart(name)
    }

    /// `Supervisor::signal`: how many were sent, or why none; `Ok(None)` while
    /// recording, when nothing is sent.
    pub fn signal(
        &self,
        name: &str,
        signal: Signal,
    ) -> Result<Option<usize>, crate::supervisor::SignalError> {
        if self.held_back("signal") {
            return Ok(None);
        }
        self.nodes.borrow_mut().signal(name, signal).map(Some)
    }

    /// `Supervisor::status`: the running nodes, in every mode.
    pub fn status(&self, name: &str) -> Status {
        self.nodes.borrow().status(name)
    }

    /// While recording, a call that would change running nodes is not carried out:
    /// a reload changes only what its plan says. Says so in the log.
    fn held_back(&self, call: &str) -> bool {
        let recording = self.is_recording();
        if recording {
            log::warn!(
                "Supervisor::{call} is not carried out while a reload evaluates the new scripts (the reload's plan says what changes)"
            );
        }
        recording
    }
}
