//! `rhai-supervisor top`: a live, full-screen view of a supervisor (ratatui on
//! crossterm), driven by its events.
//!
//! One `follow` of the topic `events` gives the status of every node and then each
//! change as it happens; the table (`model`) follows those. A second connection asks
//! for a status sample once a second, only for what events do not carry (CPU time and
//! memory, for CPU % and MEM), and carries the commands the keys give (restart,
//! destroy). Enter follows the selected node's output on a third connection (the
//! `output` topic, as `ctl tail -f`), closed when another node is followed. With
//! `--ssh HOST` each connection is an ssh process running the relay on that host.
//!
//! Threads: the main thread owns the terminal and the model and draws after each
//! batch of messages; one thread per connection reads it, blocking; one reads the
//! keys (and resizes); one waits for SIGINT, SIGTERM and SIGHUP. They all send to
//! the main thread on one channel, so the view changes only when something happened.
//! The terminal is put back (raw mode off, the main screen back, the cursor shown) on
//! every way out: `q`, Ctrl-C, a signal, the supervisor stopping or going away, and a
//! panic.

mod link;
pub mod model;
mod view;

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;
use ratatui::crossterm::event::{self as term_event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::crossterm::{cursor, execute, terminal};
use serde_json::Value;

use crate::cli::TopArgs;
use crate::config::Event;
use crate::control::ssh::{Remote, Target};
use crate::control::{Command, StreamEvent, Target as Nodes, Topic};
use link::{Closer, Link, Transport};
use model::{Action, Key, Model};
use view::View;

/// The exit statuses, as for `ctl`.
const EXIT_OK: i32 = 0;
const EXIT_REFUSED: i32 = 1;
const EXIT_USAGE: i32 = 2;
const EXIT_UNREACHABLE: i32 = 3;
/// How often usage is sampled while the view is open.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// Lines of the kept tail a follow of a node's output starts with.
const OUTPUT_TAIL: usize = 200;

/// What the other threads tell the main thread.
enum Msg {
    Key(Key),
    Resize,
    Event(Box<Event>),
    Missed,
    /// The events stream ended (the supervisor stops), or was lost (`lost`).
    End {
        reason: String,
        lost: bool,
    },
    Sample(Value, Instant),
    /// A command was answered: what to say.
    Done(String),
    OutputLines(u64, Vec<(bool, String)>),
    OutputEnd(u64, String),
    Quit,
}

/// What the keys ask the command thread to do.
enum Work {
    Restart(String),
    Destroy(String),
}

/// What the main thread tells the sampling thread: which nodes the screen shows (the
/// only ones whose usage is asked for), and whether the whole table is wanted (after
/// missed events).
#[derive(Default)]
struct Wanted {
    shown: Mutex<Vec<String>>,
    everything: AtomicBool,
}

/// Runs `top`; returns the exit status.
pub fn run(args: &TopArgs) -> i32 {
    if !std::io::stdout().is_terminal() || !std::io::stdin().is_terminal() {
        complain("top needs a terminal (its stdin and stdout)");
        return EXIT_USAGE;
    }
    let transport = match &args.ssh {
        Some(host) => {
            let target = match Target::parse(host) {
                Ok(target) => target,
                Err(e) => {
                    complain(&e.to_string());
                    return EXIT_USAGE;
                }
            };
            match Remote::new(&args.remote_command, args.socket.as_deref()) {
                Ok(remote) => Transport::Ssh { remote, target },
                Err(e) => {
                    complain(&e.to_string());
                    return EXIT_USAGE;
                }
            }
        }
        None => Transport::Local(crate::config::socket_path(args.socket.as_deref())),
    };
    // Reach the supervisor before taking the terminal: if none answers, say so plainly.
    let mut events = match transport.open() {
        Ok(link) => link,
        Err(error) => {
            complain(&error);
            return EXIT_UNREACHABLE;
        }
    };
    let status = match events.call(Command::Follow(Topic::Events)) {
        Ok(response) if response.ok => response.result.unwrap_or(Value::Null),
        Ok(response) => {
            complain(
                response
                    .error
                    .as_deref()
                    .unwrap_or("the supervisor refused"),
            );
            return EXIT_REFUSED;
        }
        Err(error) => {
            complain(&error);
            return EXIT_UNREACHABLE;
        }
    };
    let mut model = Model::new(transport.describe());
    model.set_status(&status, Instant::now());

    let (tx, rx) = crossbeam_channel::unbounded();
    let mut closers = vec![events.closer()];
    spawn("events", {
        let tx = tx.clone();
        move || read_events(events, tx)
    });
    let (work_tx, work_rx) = crossbeam_channel::unbounded();
    let wanted = Arc::new(Wanted::default());
    match transport.open() {
        Ok(worker) => {
            closers.push(worker.closer());
            let tx = tx.clone();
            let wanted = wanted.clone();
            spawn("sample", move || {
                sample_and_work(worker, work_rx, &wanted, tx)
            });
        }
        Err(error) => {
            complain(&error);
            return EXIT_UNREACHABLE;
        }
    }
    spawn("keys", {
        let tx = tx.clone();
        move || read_keys(tx)
    });
    if let Ok(mut signals) = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ]) {
        let tx = tx.clone();
        spawn("signals", move || {
            if signals.forever().next().is_some() {
                let _ = tx.send(Msg::Quit);
            }
        });
    }

    let screen = match Screen::enter() {
        Ok(screen) => screen,
        Err(error) => {
            complain(&format!("cannot set up the terminal: {error}"));
            return EXIT_USAGE;
        }
    };
    let colour = std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let outcome = serve(
        &screen,
        &mut model,
        View::new(colour),
        &transport,
        &rx,
        &tx,
        &work_tx,
        &wanted,
        &mut closers,
    );
    drop(screen);
    for closer in &closers {
        closer.close();
    }
    match outcome {
        Ok(None) => EXIT_OK,
        Ok(Some(End {
            reason,
            lost: false,
        })) => {
            say(&reason);
            EXIT_OK
        }
        Ok(Some(End { reason, lost: true })) => {
            complain(&reason);
            EXIT_UNREACHABLE
        }
        Err(error) => {
            complain(&format!("cannot draw: {error}"));
            EXIT_REFUSED
        }
    }
}

/// How the events stream ended.
struct End {
    reason: String,
    lost: bool,
}

/// The main loop: draw, wait for messages, handle them all, draw again. Returns when
/// the view is left: `None` by the user, else how the events stream ended.
#[allow(clippy::too_many_arguments)]
fn serve(
    screen: &Screen,
    model: &mut Model,
    mut view: View,
    transport: &Transport,
    rx: &Receiver<Msg>,
    tx: &Sender<Msg>,
    work: &Sender<Work>,
    wanted: &Wanted,
    closers: &mut Vec<Closer>,
) -> std::io::Result<Option<End>> {
    let mut terminal = screen.terminal()?;
    let mut output: Option<Closer> = None;
    loop {
        let now = Instant::now();
        terminal.draw(|frame| view.draw(frame, model, now))?;
        {
            let mut shown = wanted.shown.lock().unwrap_or_else(|e| e.into_inner());
            if *shown != view.shown {
                shown.clone_from(&view.shown);
            }
        }
        wanted.everything.store(model.resync, Ordering::SeqCst);
        let first = match model.message_until().filter(|at| *at > now) {
            Some(at) => match rx.recv_deadline(at) {
                Ok(msg) => msg,
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => continue,
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return Ok(None),
            },
            None => match rx.recv() {
                Ok(msg) => msg,
                Err(_) => return Ok(None),
            },
        };
        let mut next = Some(first);
        while let Some(msg) = next {
            let now = Instant::now();
            match msg {
                Msg::Key(key) => match model.key(key, now) {
                    Action::None => {}
                    Action::Quit => return Ok(None),
                    Action::Restart(node) => {
                        let _ = work.send(Work::Restart(node));
                    }
                    Action::Destroy(node) => {
                        let _ = work.send(Work::Destroy(node));
                    }
                    Action::Follow(node) => {
                        if let Some(closer) = output.take() {
                            closer.close();
                        }
                        let generation = model.follow(&node);
                        match transport.open() {
                            Ok(link) => {
                                let closer = link.closer();
                                closers.push(closer.clone());
                                output = Some(closer);
                                let tx = tx.clone();
                                spawn("output", move || follow_output(link, node, generation, tx));
                            }
                            Err(error) => model.output_ended(generation, error),
                        }
                    }
                },
                Msg::Resize => terminal.autoresize()?,
                Msg::Event(event) => model.event(&event, now),
                Msg::Missed => model.missed(),
                Msg::End { reason, lost } => return Ok(Some(End { reason, lost })),
                Msg::Sample(status, at) => model.sample(&status, at),
                Msg::Done(text) => model.say(text, now),
                Msg::OutputLines(generation, lines) => model.output_lines(generation, lines),
                Msg::OutputEnd(generation, reason) => model.output_ended(generation, reason),
                Msg::Quit => return Ok(None),
            }
            next = rx.try_recv().ok();
        }
    }
}

/// Reads the events stream until it ends.
fn read_events(mut link: Link, tx: Sender<Msg>) {
    loop {
        let msg = match link.next_event() {
            Ok(StreamEvent::Item(item)) => match serde_json::from_value::<Event>(item) {
                Ok(event) => Msg::Event(Box::new(event)),
                Err(_) => continue,
            },
            Ok(StreamEvent::Missed(_)) => Msg::Missed,
            Ok(StreamEvent::End(reason)) => {
                let _ = tx.send(Msg::End {
                    reason,
                    lost: false,
                });
                return;
            }
            Err(reason) => {
                let _ = tx.send(Msg::End { reason, lost: true });
                return;
            }
        };
        if tx.send(msg).is_err() {
            return;
        }
    }
}

/// A status sample each second (of the nodes on the screen, or of all of them after
/// missed events), and the commands the keys give, on one connection.
fn sample_and_work(mut link: Link, work: Receiver<Work>, wanted: &Wanted, tx: Sender<Msg>) {
    let ticks = crossbeam_channel::tick(SAMPLE_EVERY);
    let sample = |link: &mut Link| -> bool {
        let command = if wanted.everything.load(Ordering::SeqCst) {
            Command::Status {
                node: None,
                usage: true,
            }
        } else {
            let shown = wanted.shown.lock().unwrap_or_else(|e| e.into_inner());
            if shown.is_empty() {
                return true;
            }
            Command::StatusOf(shown.clone())
        };
        match link.call(command) {
            Ok(response) if response.ok => tx
                .send(Msg::Sample(
                    response.result.unwrap_or(Value::Null),
                    Instant::now(),
                ))
                .is_ok(),
            // The events stream tells when the supervisor goes.
            Ok(_) => true,
            Err(_) => false,
        }
    };
    if !sample(&mut link) {
        return;
    }
    loop {
        crossbeam_channel::select! {
            recv(ticks) -> _ => {
                if !sample(&mut link) {
                    return;
                }
            }
            recv(work) -> job => {
                let Ok(job) = job else { return };
                let (command, verb, node) = match job {
                    Work::Restart(node) => (Command::Restart(Nodes::Node(node.clone())), "restarted", node),
                    Work::Destroy(node) => (Command::Destroy(Nodes::Node(node.clone())), "destroyed", node),
                };
                let text = match link.call(command) {
                    Ok(response) if response.ok => format!("{verb} node '{node}'"),
                    Ok(response) => response.error.unwrap_or_else(|| "the supervisor refused".into()),
                    Err(error) => error,
                };
                if tx.send(Msg::Done(text)).is_err() {
                    return;
                }
            }
        }
    }
}

/// Follows one node's output until its stream ends or the link is closed.
fn follow_output(mut link: Link, node: String, generation: u64, tx: Sender<Msg>) {
    let topic = Topic::Output {
        node: node.clone(),
        lines: Some(OUTPUT_TAIL),
    };
    let response = match link.call(Command::Follow(topic)) {
        Ok(response) => response,
        Err(error) => {
            let _ = tx.send(Msg::OutputEnd(generation, error));
            return;
        }
    };
    if !response.ok {
        let error = response.error.unwrap_or_else(|| "refused".into());
        let _ = tx.send(Msg::OutputEnd(generation, error));
        return;
    }
    let line = |item: &Value| {
        (
            item["stream"] == "stderr",
            item["line"].as_str().unwrap_or_default().to_string(),
        )
    };
    let tail: Vec<(bool, String)> = response
        .result
        .as_ref()
        .and_then(Value::as_array)
        .map(|lines| lines.iter().map(line).collect())
        .unwrap_or_default();
    if tx.send(Msg::OutputLines(generation, tail)).is_err() {
        return;
    }
    loop {
        let msg = match link.next_event() {
            Ok(StreamEvent::Item(item)) => Msg::OutputLines(generation, vec![line(&item)]),
            Ok(StreamEvent::Missed(n)) => Msg::OutputLines(
                generation,
                vec![(true, format!("[missed {n} lines of node '{node}' here]"))],
            ),
            Ok(StreamEvent::End(reason)) => {
                let _ = tx.send(Msg::OutputEnd(generation, reason));
                return;
            }
            Err(error) => {
                let _ = tx.send(Msg::OutputEnd(generation, error));
                return;
            }
        };
        if tx.send(msg).is_err() {
            return;
        }
    }
}

/// Reads keys and resizes.
fn read_keys(tx: Sender<Msg>) {
    loop {
        let msg = match term_event::read() {
            Ok(term_event::Event::Key(key)) if key.kind != KeyEventKind::Release => {
                let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
                match key.code {
                    KeyCode::Char(c) if ctrl => Msg::Key(Key::Ctrl(c.to_ascii_lowercase())),
                    KeyCode::Char(c) => Msg::Key(Key::Char(c)),
                    KeyCode::Up => Msg::Key(Key::Up),
                    KeyCode::Down => Msg::Key(Key::Down),
                    KeyCode::PageUp => Msg::Key(Key::PageUp),
                    KeyCode::PageDown => Msg::Key(Key::PageDown),
                    KeyCode::Home => Msg::Key(Key::Home),
                    KeyCode::End => Msg::Key(Key::End),
                    KeyCode::Enter => Msg::Key(Key::Enter),
                    KeyCode::Esc => Msg::Key(Key::Esc),
                    KeyCode::Backspace => Msg::Key(Key::Backspace),
                    _ => continue,
                }
            }
            Ok(term_event::Event::Resize(..)) => Msg::Resize,
            Ok(_) => continue,
            // The terminal is gone (closed, hung up): leave.
            Err(_) => Msg::Quit,
        };
        let quit = matches!(msg, Msg::Quit);
        if tx.send(msg).is_err() || quit {
            return;
        }
    }
}

/// The terminal in full-screen mode, for as long as this lives: raw mode, the
/// alternate screen, the cursor hidden; all put back when dropped, and by a panic.
struct Screen;

impl Screen {
    fn enter() -> std::io::Result<Screen> {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore();
            previous(info);
        }));
        terminal::enable_raw_mode()?;
        let screen = Screen;
        execute!(
            std::io::stdout(),
            terminal::EnterAlternateScreen,
            terminal::Clear(terminal::ClearType::All),
            cursor::Hide
        )?;
        Ok(screen)
    }

    fn terminal(&self) -> std::io::Result<Terminal<CrosstermBackend<std::io::Stdout>>> {
        // Not `Terminal::clear`: it asks the terminal where its cursor is, and the
        // answer would go to the keys thread. The alternate screen was cleared instead.
        Terminal::new(CrosstermBackend::new(std::io::stdout()))
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        restore();
    }
}

fn restore() {
    let _ = execute!(
        std::io::stdout(),
        terminal::LeaveAlternateScreen,
        cursor::Show
    );
    let _ = terminal::disable_raw_mode();
    let _ = std::io::stdout().flush();
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) {
    let _ = std::thread::Builder::new()
        .name(format!("rhai-supervisor-top-{name}"))
        .spawn(f);
}

fn say(message: &str) {
    let _ = writeln!(std::io::stderr(), "rhai-supervisor: {message}");
}

fn complain(message: &str) {
    let _ = writeln!(std::io::stderr(), "rhai-supervisor: error: {message}");
}
