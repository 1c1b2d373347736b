//! A reload, on the policy's side: the nodes that new scripts would create, recorded
//! instead of started (`Recording`, filled by `Supervisor::record`); the difference
//! between them and the nodes the old scripts created (`Plan`); and carrying it out
//! (`Supervisor::apply_plan`), so that only what changed is touched.
//!
//! A node that keeps its configuration is not looked at again: no process work, no
//! hook, the same pid and pipes. A changed one is stopped, takes its new configuration
//! once its process has ended (`Entry::pending`, put in place by `take_pending`), and
//! starts again when its dependencies allow; its dependents follow the usual
//! `restart: true` rule. Nodes created at run time (`Origin::Run`) are neither in the
//! plan nor touched by it.
//!
//! Everything that only the machine can refuse (a directory, a program, a core) is
//! asked of the backend for every new and changed node before anything changes
//! (`Supervisor::check`), so a reload that cannot be carried out changes nothing.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::{CreateError, Input, Origin, Placed, Slot, State, Supervisor, cycle_through};
use crate::config::NodeConfig;
use crate::config::reload::{Change, FieldChange, PlanLine, ReloadReport, changes};
use crate::process::{OutputFiles, Start};

/// What the new scripts' creates asked for, in order, and what was refused.
#[derive(Debug, Default)]
pub struct Recording {
    configs: Vec<NodeConfig>,
    index: HashMap<String, usize>,
    refused: Vec<String>,
}

impl Recording {
    /// Notes a create that was refused, as the script was told.
    pub fn refused(&mut self, text: String) {
        self.refused.push(text);
    }

    /// Whether a create of `name` was recorded.
    pub fn has(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }
}

/// One node's part in a plan.
#[derive(Debug)]
enum Step {
    Create(NodeConfig),
    Restart {
        config: NodeConfig,
        fields: Vec<FieldChange>,
    },
    Keep(String),
    Destroy(String),
}

/// The difference between the nodes the old scripts created and those the new ones
/// would: what a reload does.
#[derive(Debug)]
pub struct Plan {
    /// The new scripts' nodes in their order, then the nodes to destroy in stop order.
    steps: Vec<Step>,
    refused: Vec<String>,
}

impl Plan {
    /// The plan as it is reported (before anything is carried out).
    pub fn report(&self, dry_run: bool) -> ReloadReport {
        let nodes = self
            .steps
            .iter()
            .map(|step| {
                let (node, change, fields) = match step {
                    Step::Create(config) => (config.name.clone(), Change::Create, Vec::new()),
                    Step::Restart { config, fields } => {
                        (config.name.clone(), Change::Restart, fields.clone())
                    }
                    Step::Keep(name) => (name.clone(), Change::Keep, Vec::new()),
                    Step::Destroy(name) => (name.clone(), Change::Destroy, Vec::new()),
                };
                PlanLine {
                    node,
                    change,
                    fields,
                }
            })
            .collect();
        ReloadReport {
            dry_run,
            nodes,
            refused: self.refused.clone(),
            errors: Vec::new(),
        }
    }
}

/// What the backend made ready for the changed nodes while checking them: their
/// output files.
#[derive(Default)]
pub struct Checked {
    files: HashMap<String, OutputFiles>,
}

/// A plan being carried out: the nodes it waits for.
#[derive(Debug, Default)]
pub struct Applying {
    /// Destroyed nodes, by slot and name, until they are gone.
    removed: Vec<(Slot, String)>,
    /// Changed nodes, until their old process has ended and the new configuration is
    /// in place.
    changed: Vec<Slot>,
}

impl Supervisor {
    /// `Supervisor::create` while a reload evaluates the new scripts: the same checks,
    /// in the same order, and the same answers, but nothing is started; an accepted
    /// node is added to `recording`. The table is seen as a fresh start of the new
    /// scripts would see it: the old scripts' nodes are not there, the run-time nodes
    /// are (a create of one of their names is refused, and a reload leaves them be).
    pub fn record(
        &self,
        recording: &mut Recording,
        config: NodeConfig,
    ) -> Result<Placed, CreateError> {
        config.validate().map_err(CreateError::Invalid)?;
        if let Some(host) = self.here.elsewhere(&config) {
            return Ok(Placed::Elsewhere(host.to_string()));
        }
        if recording.has(&config.name) || self.origin_of(&config.name) == Some(Origin::Run) {
            return Err(CreateError::Exists(config.name));
        }
        if self.stopping {
            return Err(CreateError::ShuttingDown);
        }
        let names_of = |c: &NodeConfig| -> Vec<String> {
            c.depends_on
                .iter()
                .flat_map(|d| d.0.keys().cloned())
                .collect()
        };
        let deps = |name: &str| -> Vec<String> {
            if name == config.name {
                return names_of(&config);
            }
            if let Some(&i) = recording.index.get(name) {
                return names_of(&recording.configs[i]);
            }
            match self.names.get(name).and_then(|&s| self.entry(s)) {
                Some(entry) if entry.origin == Origin::Run => entry.deps.keys().cloned().collect(),
                _ => Vec::new(),
            }
        };
        if let Some(path) = cycle_through(&config.name, &deps) {
            return Err(CreateError::Cycle {
                node: config.name,
                path,
            });
        }
        recording
            .index
            .insert(config.name.clone(), recording.configs.len());
        recording.configs.push(config);
        Ok(Placed::Here)
    }

    /// The plan that turns the nodes the scripts created into those of `recording`.
    pub fn plan(&self, recording: Recording) -> Plan {
        let mut steps = Vec::with_capacity(recording.configs.len());
        for config in recording.configs {
            let entry = self.names.get(&config.name).and_then(|&s| self.entry(s));
            steps.push(match entry {
                // Run-time names were refused when recorded: this is a script's node.
                Some(entry) => {
                    let old = entry.pending.as_ref().map_or(&entry.node.config, |p| &p.0);
                    if *old == config {
                        Step::Keep(config.name)
                    } else {
                        Step::Restart {
                            fields: changes(old, &config),
                            config,
                        }
                    }
                }
                None => Step::Create(config),
            });
        }
        let gone: Vec<String> = self
            .names
            .iter()
            .filter(|(name, slot)| {
                !recording.index.contains_key(*name)
                    && self
                        .entry(**slot)
                        .is_some_and(|e| e.origin == Origin::Script)
            })
            .map(|(name, _)| name.clone())
            .collect();
        steps.extend(self.stop_order(gone).into_iter().map(Step::Destroy));
        Plan {
            steps,
            refused: recording.refused,
        }
    }

    /// `names` with every node after the nodes among them that depend on it.
    fn stop_order(&self, names: Vec<String>) -> Vec<String> {
        let set: HashSet<&str> = names.iter().map(String::as_str).collect();
        let deps_in_set = |name: &str| -> Vec<String> {
            self.names
                .get(name)
                .and_then(|&s| self.entry(s))
                .map(|e| {
                    e.deps
                        .keys()
                        .filter(|d| set.contains(d.as_str()) && d.as_str() != name)
                        .cloned()
                        .collect()
                })
                .unwrap_or_default()
        };
        // How many nodes of the set still wait to go before each one.
        let mut blocking: BTreeMap<&str, usize> = names.iter().map(|n| (n.as_str(), 0)).collect();
        let mut deps: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for name in &names {
            let of = deps_in_set(name);
            for dep in &of {
                if let Some(count) = blocking.get_mut(dep.as_str()) {
                    *count += 1;
                }
            }
            deps.insert(name.as_str(), of);
        }
        let mut ordered = Vec::with_capacity(names.len());
        let mut ready: Vec<&str> = blocking
            .iter()
            .filter(|(_, n)| **n == 0)
            .map(|(name, _)| *name)
            .collect();
        ready.reverse();
        while let Some(name) = ready.pop() {
            ordered.push(name.to_string());
            for dep in deps.get(name).into_iter().flatten() {
                if let Some(count) = blocking.get_mut(dep.as_str()) {
                    *count -= 1;
                    if *count == 0 {
                        ready.push(dep.as_str());
                    }
                }
            }
        }
        // The table has no cycles, but should one slip through, nothing is lost.
        for name in &names {
            if !ordered.contains(name) {
                ordered.push(name.clone());
            }
        }
        ordered
    }

    /// Asks the backend about every new and changed node of `plan` what only starting
    /// it could tell (its directory, program, core, environment file), so that a plan
    /// that cannot be carried out is refused before anything changes.
    pub fn check(&mut self, plan: &Plan) -> Result<Checked, CreateError> {
        let mut checked = Checked::default();
        for step in &plan.steps {
            let config = match step {
                Step::Create(config) | Step::Restart { config, .. } => config,
                Step::Keep(_) | Step::Destroy(_) => continue,
            };
            let slot = self.names.get(&config.name).copied().unwrap_or(0);
            let proc = self.proc_id(slot);
            let started = self.backend.start(config, proc, Start::Check)?;
            if let Step::Restart { .. } = step {
                checked.files.insert(config.name.clone(), started.files);
            }
        }
        Ok(checked)
    }

    /// Carries out `plan` (after `check`): destroys what the new scripts no longer
    /// create, in stop order; restarts what changed with its new configuration;
    /// creates what is new. Returns what to wait for, and what failed (a new node
    /// whose process would not start after all).
    pub fn apply_plan(&mut self, plan: Plan, mut checked: Checked) -> (Applying, Vec<String>) {
        let mut applying = Applying::default();
        let mut errors = Vec::new();
        let mut gone = Vec::new();
        for step in &plan.steps {
            if let Step::Destroy(name) = step {
                if let Some(&slot) = self.names.get(name) {
                    applying.removed.push((slot, name.clone()));
                    gone.push(slot);
                }
            }
        }
        self.destroy_slots(gone, true);
        for step in plan.steps {
            match step {
                Step::Restart { config, .. } => {
                    let Some(&slot) = self.names.get(&config.name) else {
                        continue;
                    };
                    let files = checked.files.remove(&config.name).unwrap_or_default();
                    applying.changed.push(slot);
                    self.reconfigure(slot, config, files);
                }
                Step::Create(config) => {
                    if let Err(error) = self.create_as(config, Origin::Script) {
                        log::error!("reload: {error}");
                        errors.push(error.to_string());
                    }
                }
                Step::Keep(_) | Step::Destroy(_) => {}
            }
        }
        (applying, errors)
    }

    /// Whether what `apply` started is done: every destroyed node gone, every changed
    /// node past its old process (started again, or waiting for its dependencies).
    pub fn is_applied(&self, applying: &Applying) -> bool {
        let removed = applying.removed.iter().all(|(slot, name)| {
            self.entry(*slot)
                .is_none_or(|e| e.node.config.name != *name || self.names.get(name) == Some(slot))
        });
        let changed = applying.changed.iter().all(|slot| {
            self.entry(*slot).is_none_or(|e| {
                let current = self.names.get(&e.node.config.name) == Some(slot);
                !current || (e.pending.is_none() && !matches!(e.node.state, State::Stopping { .. }))
            })
        });
        removed && changed
    }

    /// Who created the node named `name`, if it exists.
    pub fn origin_of(&self, name: &str) -> Option<Origin> {
        self.names
            .get(name)
            .and_then(|&s| self.entry(s))
            .map(|e| e.origin)
    }

    /// Gives the node in `slot` a new configuration: its process (if any) is stopped,
    /// and the configuration is put in place once it has ended.
    fn reconfigure(&mut self, slot: Slot, config: NodeConfig, files: OutputFiles) {
        let Some(entry) = self.nodes.get_mut(slot as usize).and_then(Option::as_mut) else {
            return;
        };
        let name = &entry.node.config.name;
        match entry
            .node
            .state
            .instance()
            .filter(|_| entry.node.state.is_up())
        {
            Some(instance) => log::info!(
                "restarting node '{name}' (pid {}) with its new configuration",
                instance.pid
            ),
            None => log::info!("node '{name}' takes its new configuration"),
        }
        entry.pending = Some((config, files));
        self.step(slot, Input::Reconfigure);
        self.take_pending(slot);
    }

    /// Puts a reload's new configuration of the node in `slot` in place, if it has one
    /// and no process, and starts the node if its dependencies allow.
    pub(super) fn take_pending(&mut self, slot: Slot) {
        let Some(entry) = self.nodes.get_mut(slot as usize).and_then(Option::as_mut) else {
            return;
        };
        if entry.node.state.instance().is_some() {
            return;
        }
        let Some((config, files)) = entry.pending.take() else {
            return;
        };
        let old: Vec<String> = entry.deps.keys().cloned().collect();
        for dep in old {
            if let Some(list) = self.dependents.get_mut(&dep) {
                list.retain(|&s| s != slot);
                if list.is_empty() {
                    self.dependents.remove(&dep);
                }
            }
        }
        let deps = self.dependencies(&config);
        for dep in deps.keys() {
            self.dependents.entry(dep.clone()).or_default().push(slot);
        }
        let Some(entry) = self.nodes.get_mut(slot as usize).and_then(Option::as_mut) else {
            return;
        };
        entry.deps = deps;
        entry.node.reconfigure(config, files);
        entry.generation = entry.generation.wrapping_add(1);
        entry.probe = None;
        entry.health = None;
        entry.health_failures = 0;
        entry.status_text = None;
        if !matches!(entry.node.state, State::Waiting) {
            return;
        }
        let waiting: Vec<String> = entry.unmet().cloned().collect();
        if waiting.is_empty() {
            self.step(slot, Input::DependenciesMet);
        } else {
            log::info!(
                "node '{}' waits for {}",
                entry.node.config.name,
                waiting
                    .iter()
                    .map(|n| format!("'{n}'"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            self.log_hopeless(slot);
        }
    }
}
