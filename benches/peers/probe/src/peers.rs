//! The supervisors under test, and how each is set up to run N copies of the child
//! program (`pause`), at its defaults and with its restart delay at its minimum.

use std::fmt::Write as _;
use std::fs;
use std::io;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Peer {
    Rhai,
    Bash,
    Supervisord,
    Circus,
    S6,
    S6Ready,
    Runit,
    Pm2,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// The peer as it comes: default restart delays and settings.
    Defaults,
    /// The restart delay at its minimum.
    Min,
}

pub const ALL: [Peer; 8] = [
    Peer::Rhai,
    Peer::Bash,
    Peer::Supervisord,
    Peer::Circus,
    Peer::S6,
    Peer::S6Ready,
    Peer::Runit,
    Peer::Pm2,
];

/// Where the programs are.
pub struct Paths {
    pub rhai: PathBuf,
    pub pause: PathBuf,
    /// `target/peers`: the venv, the npm prefix, run directories.
    pub cache: PathBuf,
    /// `benches/peers`: the bash loop.
    pub bench: PathBuf,
}

impl Peer {
    pub fn name(self) -> &'static str {
        match self {
            Peer::Rhai => "rhai",
            Peer::Bash => "bash",
            Peer::Supervisord => "supervisord",
            Peer::Circus => "circus",
            Peer::S6 => "s6",
            Peer::S6Ready => "s6-ready",
            Peer::Runit => "runit",
            Peer::Pm2 => "pm2",
        }
    }

    pub fn from_name(name: &str) -> Option<Peer> {
        ALL.into_iter().find(|p| p.name() == name)
    }

    /// The name the setup step uses in its skip list.
    fn package(self) -> &'static str {
        match self {
            Peer::S6Ready => "s6",
            other => other.name(),
        }
    }

    /// The program that must exist for this peer, or why it cannot run.
    pub fn check(self, paths: &Paths, skipped: &str) -> Result<(), String> {
        if let Some(line) = skipped
            .lines()
            .find(|l| l.starts_with(&format!("skip {}:", self.package())))
        {
            return Err(line.trim_start_matches("skip ").to_string());
        }
        let program = match self {
            Peer::Rhai => paths.rhai.clone(),
            Peer::Bash => PathBuf::from("/bin/bash"),
            Peer::Supervisord => paths.cache.join("venv/bin/supervisord"),
            Peer::Circus => paths.cache.join("venv/bin/circusd"),
            Peer::S6 | Peer::S6Ready => which("s6-svscan").unwrap_or_default(),
            Peer::Runit => which("runsvdir").unwrap_or_default(),
            Peer::Pm2 => paths.cache.join("npm/node_modules/.bin/pm2-runtime"),
        };
        if program.as_os_str().is_empty() || !program.exists() {
            return Err(format!(
                "{}: not installed ({} missing; run benches/peers/setup.sh)",
                self.name(),
                program.display()
            ));
        }
        Ok(())
    }

    /// The signal that asks this supervisor to stop its children and exit: SIGTERM,
    /// except runit, whose runsvdir exits on SIGTERM leaving its runsv processes and
    /// their services running; SIGHUP makes it stop them first.
    pub fn stop_signal(self) -> i32 {
        match self {
            Peer::Runit => libc::SIGHUP,
            _ => libc::SIGTERM,
        }
    }

    /// The span of the random gap before each kill in the revival test: the period at
    /// which the supervisor looks at its children when it polls (circus checks every
    /// `check_delay`, 5 s by default), so that kills fall at random phases of it; 1 s
    /// otherwise (supervisord's poll wakes every second).
    pub fn kill_gap_span(self, variant: Variant) -> Duration {
        match (self, variant) {
            (Peer::Circus, Variant::Defaults) => Duration::from_secs(5),
            _ => Duration::from_secs(1),
        }
    }

    /// What the two variants are for this peer, for the report.
    pub fn describe(self) -> (&'static str, &'static str) {
        match self {
            Peer::Rhai => (
                "`command` nodes, revival_delay 1 s (Zeek's policy)",
                "`revival_delay: 0`",
            ),
            Peer::Bash => (
                "`wait -n -p` loop, revives at once",
                "same (no delay to lower)",
            ),
            Peer::Supervisord => (
                "one `[program]` with `numprocs=N`, startsecs 1, autorestart unexpected",
                "`startsecs=0`, `autorestart=true` (it has no restart delay for a running process)",
            ),
            Peer::Circus => (
                "one watcher with `numprocesses=N`, check_delay 5 s (circus notices deaths by polling)",
                "`check_delay = 0.01`",
            ),
            Peer::S6 => (
                "N service dirs, `run` a symlink to the child, `s6-svscan -c max(500, N+16)` (it watches 500 services by default)",
                "same (s6 has no setting for its restart pause)",
            ),
            Peer::S6Ready => (
                "as s6, with `notification-fd` 3: the child writes a newline on fd 3",
                "same",
            ),
            Peer::Runit => (
                "N service dirs, `run` a symlink to the child, runsvdir; stopped with SIGHUP",
                "same (runsv waits 1 s only when a child dies within 1 s of its start)",
            ),
            Peer::Pm2 => (
                "pm2-runtime (foreground), N apps with `interpreter: none`, restart_delay 0",
                "same (restart_delay is 0 by default)",
            ),
        }
    }

    /// Writes the configuration for `n` children into the empty directory `dir` and
    /// returns the command that starts the supervisor.
    pub fn prepare(
        self,
        paths: &Paths,
        dir: &Path,
        n: usize,
        variant: Variant,
    ) -> io::Result<Command> {
        let pause = paths.pause.display().to_string();
        let mut command = match self {
            Peer::Rhai => {
                let delay = match variant {
                    Variant::Defaults => "",
                    Variant::Min => ", revival_delay: 0",
                };
                let script = format!(
                    "// {n} command nodes, each running the benchmark's child program.\n\
                     fn zeek_init() {{\n    \
                         for i in 0..{n} {{\n        \
                             let res = Supervisor::create(#{{name: `c${{i}}`, command: [\"{pause}\"]{delay}}});\n        \
                             if res != \"\" {{ print(res); }}\n    \
                         }}\n\
                     }}\n"
                );
                fs::write(dir.join("bench.rhai"), script)?;
                let mut c = Command::new(&paths.rhai);
                c.arg("run").arg(dir.join("bench.rhai"));
                c
            }
            Peer::Bash => {
                let mut c = Command::new("/bin/bash");
                c.arg(paths.bench.join("bash-loop.sh"))
                    .arg(n.to_string())
                    .arg(&paths.pause);
                c
            }
            Peer::Supervisord => {
                let mut conf = format!(
                    "[supervisord]\nnodaemon=true\nlogfile={d}/supervisord.log\n\
                     pidfile={d}/supervisord.pid\nchildlogdir={d}\n\
                     minfds={fds}\nminprocs={procs}\n\n\
                     [program:c]\ncommand={pause}\nprocess_name=c%(process_num)d\nnumprocs={n}\n",
                    d = dir.display(),
                    fds = (n * 4 + 64).max(1024),
                    procs = (n + 200).max(200),
                );
                if variant == Variant::Min {
                    conf.push_str("startsecs=0\nautorestart=true\n");
                }
                fs::write(dir.join("supervisord.conf"), conf)?;
                let mut c = Command::new(paths.cache.join("venv/bin/supervisord"));
                c.arg("-c").arg(dir.join("supervisord.conf"));
                c
            }
            Peer::Circus => {
                let mut conf = format!(
                    "[circus]\nendpoint = ipc://{d}/endpoint.sock\n\
                     pubsub_endpoint = ipc://{d}/pubsub.sock\nstats_endpoint = ipc://{d}/stats.sock\n",
                    d = dir.display()
                );
                if variant == Variant::Min {
                    conf.push_str("check_delay = 0.01\n");
                }
                let _ = write!(conf, "\n[watcher:c]\ncmd = {pause}\nnumprocesses = {n}\n");
                fs::write(dir.join("circus.ini"), conf)?;
                let mut c = Command::new(paths.cache.join("venv/bin/circusd"));
                c.arg(dir.join("circus.ini"));
                c
            }
            Peer::S6 | Peer::S6Ready => {
                let scan = dir.join("scan");
                fs::create_dir(&scan)?;
                for i in 0..n {
                    let service = scan.join(format!("c{i}"));
                    fs::create_dir(&service)?;
                    symlink(&paths.pause, service.join("run"))?;
                    if self == Peer::S6Ready {
                        fs::write(service.join("notification-fd"), "3\n")?;
                    }
                }
                // s6-svscan watches at most 500 services unless told otherwise.
                let mut c = Command::new(which("s6-svscan").unwrap());
                c.arg("-c").arg((n + 16).max(500).to_string()).arg(&scan);
                if self == Peer::S6Ready {
                    c.env("PAUSE_NOTIFY_FD", "3");
                }
                c
            }
            Peer::Runit => {
                let sv = dir.join("sv");
                fs::create_dir(&sv)?;
                for i in 0..n {
                    let service = sv.join(format!("c{i}"));
                    fs::create_dir(&service)?;
                    symlink(&paths.pause, service.join("run"))?;
                }
                let mut c = Command::new(which("runsvdir").unwrap());
                c.arg(&sv);
                c
            }
            Peer::Pm2 => {
                let mut apps = String::new();
                for i in 0..n {
                    let _ = writeln!(
                        apps,
                        "    {{ name: \"c{i}\", script: \"{pause}\", interpreter: \"none\", autorestart: true }},"
                    );
                }
                fs::write(
                    dir.join("ecosystem.config.js"),
                    format!("module.exports = {{\n  apps: [\n{apps}  ],\n}};\n"),
                )?;
                let mut c = Command::new(paths.cache.join("npm/node_modules/.bin/pm2-runtime"));
                c.arg("start")
                    .arg(dir.join("ecosystem.config.js"))
                    .env("PM2_HOME", dir.join("pm2-home"));
                c
            }
        };
        command
            .current_dir(dir)
            .env_remove("PAUSE_NOTIFY_FD")
            .stdin(Stdio::null())
            .stdout(fs::File::create(dir.join("stdout.log"))?)
            .stderr(fs::File::create(dir.join("stderr.log"))?);
        if self == Peer::S6Ready {
            command.env("PAUSE_NOTIFY_FD", "3");
        }
        Ok(command)
    }
}

pub fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(program))
            .find(|p| p.is_file())
    })
}
