//! The terminal's input, read by the REPL itself and handed to the line editor a line
//! at a time, so that nothing typed or pasted is lost.
//!
//! Why: rustyline reads the terminal through a buffer that lives for one `readline`
//! call. What came in the same read as the Enter that ends a call (the next typed
//! line, the rest of a paste) is in that buffer and is dropped with it; and between
//! calls, while a statement runs, the terminal is back in cooked mode, where the kernel
//! echoes keys and edits them as a line of its own.
//!
//! So the REPL owns the terminal for the whole session: raw input (output processing
//! as it was) and bracketed paste on, and a thread (`repl-keys`) that reads every byte
//! into a queue as it arrives. The editor reads a pseudo-terminal of ours instead, put
//! on fd 0 where rustyline looks. That is fed from the queue only while a `readline`
//! call reads, and in canonical mode: `\r` ends a line and a byte that valid UTF-8
//! never holds (`PUSH`) is the "end of file" key, which hands out what is typed so far
//! without being read itself. The feeder ends a run after every key that can end a
//! `readline` call (Enter; the interrupt, quit and end-of-file keys) and at the end of
//! what it has, and the kernel gives at most one run per read, so the editor's buffer
//! never holds a byte past the key that ends its call. When the call returns, what the
//! pseudo-terminal still holds is taken back into the queue, in front of what came
//! since (`Feed::take_back`); the next call is fed again.
//!
//! The editor is told nothing. It meets the feeder twice: `Feed::editor_reading` runs
//! in the completion helper's `hint`, which rustyline calls on every redraw, the first
//! time after it has put its terminal in raw mode and before it reads (that mode switch
//! would merge the runs the kernel holds, so feeding starts after it); and
//! `Feed::editor_done` runs when `readline` has returned.
//!
//! On the way, the thread makes invalid UTF-8 into U+FFFD (the editor would give up
//! on it) and splits a bracketed paste into its lines, each pasted on its own and
//! followed by Enter: every statement of a pasted block runs in turn, as if typed, and
//! the lines of an unfinished one go on at `...>`. While no `readline` call reads (a
//! statement runs), the interrupt key raises SIGINT, which stops the statement (so does
//! the quit key, which the editor too takes for Ctrl-C); everything else waits in the
//! queue, in order, and nothing is echoed until the editor takes it. The suspend key
//! stops the process at any time, as the kernel does in cooked mode, with the
//! terminal's own settings put back first (the editor's Ctrl-Z would leave it in raw
//! mode for the shell); SIGCONT puts the REPL's back and has the prompt drawn again.

use std::collections::VecDeque;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, FdFlag, OFlag, fcntl};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{Signal, raise};
use nix::sys::termios::{
    ControlFlags, InputFlags, LocalFlags, SetArg, SpecialCharacterIndices as Cc, Termios,
    tcgetattr, tcsetattr,
};

/// Ends a run in canonical mode without being read (it is the pseudo-terminal's
/// VEOF). Never part of valid UTF-8, and only valid UTF-8 is fed.
const PUSH: u8 = 0xFF;
/// The longest run the kernel is left to gather: in canonical mode it drops what goes
/// past 4095 bytes without an end of line.
const RUN_LIMIT: usize = 2048;
/// How much of the queue is framed at a time (the pseudo-terminal takes about 14 KiB).
const FRAME_BATCH: usize = 4096;
const PASTE_START: &[u8] = b"\x1b[200~";
const PASTE_END: &[u8] = b"\x1b[201~";
const BRACKETED_PASTE_ON: &[u8] = b"\x1b[?2004h";
const BRACKETED_PASTE_OFF: &[u8] = b"\x1b[?2004l";
const REPLACEMENT: &str = "\u{FFFD}";

/// What Ctrl-C while a statement runs does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnInterrupt {
    /// Raise SIGINT: the event loop of this process stops the running statement.
    Signal,
    /// The statement runs in another process and nothing here can stop it: put the
    /// terminal back and raise SIGINT, which ends this process (as it did when the
    /// kernel sent it).
    Exit,
}

/// The terminal's special keys (from its settings; 0 is a disabled one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct SpecialKeys {
    interrupt: u8,
    quit: u8,
    suspend: u8,
    end_of_file: u8,
}

impl SpecialKeys {
    fn of(settings: &Termios) -> SpecialKeys {
        let cc = &settings.control_chars;
        SpecialKeys {
            interrupt: cc[Cc::VINTR as usize],
            quit: cc[Cc::VQUIT as usize],
            suspend: cc[Cc::VSUSP as usize],
            end_of_file: cc[Cc::VEOF as usize],
        }
    }

    /// Whether the editor may end a `readline` call at this byte. It maps the
    /// interrupt, quit and end-of-file keys of its terminal's settings (disabled or
    /// not) to Interrupt and EndOfFile; `\r` and `\n` end a line in canonical mode
    /// anyway.
    fn may_end_read(&self, byte: u8) -> bool {
        byte == self.interrupt || byte == self.quit || byte == self.end_of_file
    }
}

/// What the thread passes on, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    /// Bytes for the editor.
    Keys(Vec<u8>),
    /// The interrupt or quit key, typed (not pasted).
    Interrupt(u8),
    /// The suspend key, typed (not pasted).
    Suspend(u8),
}

/// Turns what is read from the terminal into what the editor is given: valid UTF-8,
/// pastes split into lines, the job-control keys picked out.
struct Decoder {
    keys: SpecialKeys,
    /// An unfinished UTF-8 sequence at the end of the last read.
    partial_char: Vec<u8>,
    /// The beginning of a paste marker at the end of the last read.
    partial_marker: Vec<u8>,
    in_paste: bool,
    /// In a paste: the current line's opening marker has gone out.
    line_open: bool,
    /// In a paste: the last byte ended a line with `\r` (so a `\n` after it does not
    /// end another).
    after_cr: bool,
}

impl Decoder {
    fn new(keys: SpecialKeys) -> Decoder {
        Decoder {
            keys,
            partial_char: Vec::new(),
            partial_marker: Vec::new(),
            in_paste: false,
            line_open: false,
            after_cr: false,
        }
    }

    /// The pieces in `input`, given everything read before it.
    fn decode(&mut self, input: &[u8]) -> Vec<Piece> {
        let mut data = std::mem::take(&mut self.partial_marker);
        self.valid_utf8(input, &mut data);
        let mut out = Pieces::default();
        let mut at = 0;
        while at < data.len() {
            let rest = &data[at..];
            if rest[0] == 0x1b {
                let marker = if self.in_paste {
                    PASTE_END
                } else {
                    PASTE_START
                };
                if rest.starts_with(marker) {
                    if self.in_paste {
                        self.close_line(&mut out);
                        self.in_paste = false;
                        self.after_cr = false;
                    } else {
                        self.in_paste = true;
                    }
                    at += marker.len();
                    continue;
                }
                // A marker cut off by the end of the read: wait for the rest. A lone
                // ESC outside a paste goes on at once, since it is a key of its own.
                if rest.len() < marker.len()
                    && marker.starts_with(rest)
                    && (self.in_paste || rest.len() > 1)
                {
                    self.partial_marker = rest.to_vec();
                    break;
                }
            }
            if self.in_paste {
                self.pasted(rest[0], &mut out);
            } else {
                self.typed(rest[0], &mut out);
            }
            at += 1;
        }
        out.0
    }

    /// Appends the valid UTF-8 of the unfinished sequence and `input` to `out`: an
    /// invalid sequence becomes U+FFFD, an unfinished one at the end waits for more.
    fn valid_utf8(&mut self, input: &[u8], out: &mut Vec<u8>) {
        let mut data = std::mem::take(&mut self.partial_char);
        data.extend_from_slice(input);
        let mut rest = &data[..];
        loop {
            match std::str::from_utf8(rest) {
                Ok(text) => {
                    out.extend_from_slice(text.as_bytes());
                    return;
                }
                Err(error) => {
                    let (good, bad) = rest.split_at(error.valid_up_to());
                    out.extend_from_slice(good);
                    match error.error_len() {
                        Some(len) => {
                            out.extend_from_slice(REPLACEMENT.as_bytes());
                            rest = &bad[len..];
                        }
                        None => {
                            self.partial_char = bad.to_vec();
                            return;
                        }
                    }
                }
            }
        }
    }

    fn typed(&mut self, byte: u8, out: &mut Pieces) {
        let keys = self.keys;
        if byte != 0 && (byte == keys.interrupt || byte == keys.quit) {
            out.0.push(Piece::Interrupt(byte));
        } else if byte != 0 && byte == keys.suspend {
            out.0.push(Piece::Suspend(byte));
        } else {
            out.key(byte);
        }
    }

    fn pasted(&mut self, byte: u8, out: &mut Pieces) {
        match byte {
            b'\n' if self.after_cr => self.after_cr = false,
            b'\r' | b'\n' => {
                self.close_line(out);
                out.key(b'\r');
                self.after_cr = byte == b'\r';
            }
            _ => {
                self.after_cr = false;
                if !self.line_open {
                    out.keys(PASTE_START);
                    self.line_open = true;
                }
                out.key(byte);
            }
        }
    }

    fn close_line(&mut self, out: &mut Pieces) {
        if self.line_open {
            out.keys(PASTE_END);
            self.line_open = false;
        }
    }
}

/// Pieces, with neighbouring keys in one.
#[derive(Default)]
struct Pieces(Vec<Piece>);

impl Pieces {
    fn keys(&mut self, bytes: &[u8]) {
        match self.0.last_mut() {
            Some(Piece::Keys(keys)) => keys.extend_from_slice(bytes),
            _ => self.0.push(Piece::Keys(bytes.to_vec())),
        }
    }

    fn key(&mut self, byte: u8) {
        self.keys(&[byte]);
    }
}

/// The queue and what the pseudo-terminal was given.
struct Queue {
    /// Bytes for the editor that the pseudo-terminal has not been given.
    waiting: VecDeque<u8>,
    /// What the pseudo-terminal was given since it was last emptied, with `PUSH`
    /// where a run ends; the part from `written` on waits for room.
    framed: Vec<u8>,
    written: usize,
    /// Bytes at the end of `framed` since a run last ended.
    run: usize,
    /// A `readline` call reads.
    feeding: bool,
    /// The terminal has ended: each `readline` call gets an end of file.
    ended: bool,
    end_given: bool,
    /// The pseudo-terminal's settings between `readline` calls: no echo, no line
    /// editing, the terminal's keys. (Here, under the lock, since nix's `Termios`
    /// cannot be shared between threads.)
    resting: Termios,
    /// Its settings while fed: lines end at `\r` and `\n`, runs at `PUSH`.
    canonical: Termios,
}

/// The feeder: the queue and the pseudo-terminal the editor reads.
pub(crate) struct Feed {
    queue: Mutex<Queue>,
    /// Our side of the pseudo-terminal (non-blocking).
    master: OwnedFd,
    /// The editor's side, opened on its own (non-blocking) for taking bytes back.
    slave: OwnedFd,
    keys: SpecialKeys,
    /// Tells the thread to wait for room in the pseudo-terminal.
    wake: UnixStream,
    woken: UnixStream,
}

impl Feed {
    /// A new pseudo-terminal whose settings follow `terminal`'s (the editor reads its
    /// special keys from them).
    pub(crate) fn new(terminal: &Termios) -> std::io::Result<Feed> {
        let pty = nix::pty::openpty(None, None)?;
        for fd in [&pty.master, &pty.slave] {
            fcntl(fd.as_fd(), FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
            fcntl(fd.as_fd(), FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
        }
        let resting = resting_mode(terminal);
        let canonical = canonical_mode(&resting);
        tcsetattr(&pty.slave, SetArg::TCSANOW, &resting)?;
        let (wake, woken) = UnixStream::pair()?;
        wake.set_nonblocking(true)?;
        woken.set_nonblocking(true)?;
        Ok(Feed {
            queue: Mutex::new(Queue {
                waiting: VecDeque::new(),
                framed: Vec::new(),
                written: 0,
                run: 0,
                feeding: false,
                ended: false,
                end_given: false,
                resting,
                canonical,
            }),
            master: pty.master,
            slave: pty.slave,
            keys: SpecialKeys::of(terminal),
            wake,
            woken,
        })
    }

    /// A new open of the editor's side (blocking, as rustyline expects).
    pub(crate) fn open_editor_side(&self) -> std::io::Result<std::fs::File> {
        let path = nix::unistd::ttyname(&self.slave)?;
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(nix::libc::O_NOCTTY)
            .open(path)
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// From the editor's redraw: when it has just put the pseudo-terminal in raw mode
    /// (at the start of a `readline` call), take back what the kernel holds (nothing,
    /// unless the editor switched modes in the middle of a call), switch to canonical
    /// mode and feed.
    pub(crate) fn editor_reading(&self) {
        match tcgetattr(&self.slave) {
            Ok(now) if !now.local_flags.contains(LocalFlags::ICANON) => {}
            _ => return,
        }
        let mut queue = self.lock();
        self.take_back(&mut queue);
        if let Err(e) = tcsetattr(&self.slave, SetArg::TCSANOW, &queue.canonical) {
            log::warn!("cannot set up the line editor's input: {e}");
        }
        queue.feeding = true;
        if self.give(&mut queue) {
            self.wake();
        }
    }

    /// `readline` has returned: stop feeding and take back what it did not read.
    pub(crate) fn editor_done(&self) {
        let mut queue = self.lock();
        queue.feeding = false;
        // rustyline has put its settings back already; this makes sure that every
        // byte the kernel holds can be read, whole runs or not.
        let _ = tcsetattr(&self.slave, SetArg::TCSANOW, &queue.resting);
        self.take_back(&mut queue);
    }

    /// Queues bytes for the editor, and feeds them when it reads. True when some wait
    /// for room in the pseudo-terminal.
    fn push(&self, queue: &mut Queue, bytes: &[u8]) -> bool {
        queue.waiting.extend(bytes);
        self.give(queue)
    }

    /// The terminal has ended: from now on the editor reads an end of file.
    fn end(&self, queue: &mut Queue) -> bool {
        queue.ended = true;
        self.give(queue)
    }

    /// Gives the pseudo-terminal what waits, as far as it has room; true when some is
    /// left for later.
    fn give(&self, queue: &mut Queue) -> bool {
        if !queue.feeding {
            return false;
        }
        loop {
            if queue.written == queue.framed.len() && !self.frame(queue) {
                return false;
            }
            match nix::unistd::write(&self.master, &queue.framed[queue.written..]) {
                Ok(0) | Err(Errno::EAGAIN) => return true,
                Ok(n) => queue.written += n,
                Err(Errno::EINTR) => {}
                Err(e) => {
                    // Nothing more can reach the editor; do not try again and again.
                    log::error!("cannot hand the input to the line editor: {e}");
                    queue.feeding = false;
                    return false;
                }
            }
        }
    }

    /// Moves a batch of waiting bytes to `framed`, ending runs after the keys that may
    /// end a `readline` call, at the length limit and at the end of what waits. False
    /// when there was nothing to move.
    fn frame(&self, queue: &mut Queue) -> bool {
        let Queue {
            waiting,
            framed,
            run,
            ended,
            end_given,
            ..
        } = queue;
        let before = framed.len();
        let batch = waiting.len().min(FRAME_BATCH);
        for byte in waiting.drain(..batch) {
            framed.push(byte);
            if byte == b'\r' || byte == b'\n' {
                *run = 0;
            } else if self.keys.may_end_read(byte) || *run + 1 >= RUN_LIMIT {
                framed.push(PUSH);
                *run = 0;
            } else {
                *run += 1;
            }
        }
        if waiting.is_empty() {
            if *run > 0 {
                framed.push(PUSH);
                *run = 0;
            }
            // A push that begins a line reads as the end of the input.
            if *ended && !*end_given {
                framed.push(PUSH);
                *end_given = true;
            }
        }
        framed.len() > before
    }

    /// Empties the pseudo-terminal: what the editor has not read goes back to the front
    /// of the queue.
    fn take_back(&self, queue: &mut Queue) {
        let mut unread = 0;
        let mut buf = [0u8; 4096];
        loop {
            match nix::unistd::read(&self.slave, &mut buf) {
                Ok(0) => break,
                Ok(n) => unread += n,
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => break,
                Err(e) => {
                    log::debug!("cannot empty the line editor's input: {e}");
                    break;
                }
            }
        }
        // The kernel holds the last `unread` bytes written, one for one (a push it
        // has seen reads as a NUL, like a typed one): take them from our own copy.
        let from = queue.written.saturating_sub(unread);
        let mut back: VecDeque<u8> = queue.framed[from..]
            .iter()
            .copied()
            .filter(|&b| b != PUSH)
            .collect();
        back.append(&mut queue.waiting);
        queue.waiting = back;
        queue.framed.clear();
        queue.written = 0;
        queue.run = 0;
        queue.end_given = false;
    }

    fn wake(&self) {
        // Full means the thread has a wake-up pending already.
        let _ = (&self.wake).write(&[1]);
    }

    fn wants_room(&self) -> bool {
        let queue = self.lock();
        queue.feeding && (queue.written < queue.framed.len() || !queue.waiting.is_empty())
    }
}

/// The terminal while the REPL owns it: raw input, as rustyline sets it; output
/// processing as it was.
fn session_mode(original: &Termios) -> Termios {
    let mut raw = original.clone();
    raw.input_flags &= !(InputFlags::BRKINT
        | InputFlags::ICRNL
        | InputFlags::INPCK
        | InputFlags::ISTRIP
        | InputFlags::IXON);
    raw.control_flags |= ControlFlags::CS8;
    raw.local_flags &=
        !(LocalFlags::ECHO | LocalFlags::ICANON | LocalFlags::IEXTEN | LocalFlags::ISIG);
    raw.control_chars[Cc::VMIN as usize] = 1;
    raw.control_chars[Cc::VTIME as usize] = 0;
    raw
}

/// The pseudo-terminal between `readline` calls: raw, and the terminal's special
/// keys, which the editor maps at the start of each call.
fn resting_mode(terminal: &Termios) -> Termios {
    let mut resting = session_mode(terminal);
    resting.input_flags &=
        !(InputFlags::INLCR | InputFlags::IGNCR | InputFlags::IXOFF | InputFlags::IMAXBEL);
    resting.local_flags &= !LocalFlags::ECHONL;
    resting
}

/// The pseudo-terminal while fed: canonical, with nothing but the ends of lines and
/// `PUSH` special (the kernel drops a push; ISIG and IEXTEN are off).
fn canonical_mode(resting: &Termios) -> Termios {
    let mut canonical = resting.clone();
    canonical.local_flags |= LocalFlags::ICANON;
    let cc = &mut canonical.control_chars;
    cc[Cc::VEOF as usize] = PUSH;
    cc[Cc::VEOL as usize] = b'\r';
    cc[Cc::VEOL2 as usize] = 0;
    cc[Cc::VERASE as usize] = 0;
    cc[Cc::VKILL as usize] = 0;
    canonical
}

/// The terminal's input, owned for the session: the thread, the feeder, and what to
/// put back.
pub(crate) struct Keys {
    feed: Arc<Feed>,
    /// The terminal, as fd 0 was before the editor's side took its place.
    terminal: Arc<OwnedFd>,
    original: Termios,
    continued: Option<signal_hook::SigId>,
    /// Dropped to stop the thread.
    stop: Option<UnixStream>,
    thread: Option<JoinHandle<()>>,
}

impl Keys {
    /// Takes the terminal on fd 0 over: its keys go through the feeder, and the editor
    /// (rustyline, on fd 0) reads the feeder's pseudo-terminal from now on.
    /// `redraw` has the editor draw its prompt and line again (after Ctrl-Z and `fg`).
    pub(crate) fn start(
        on_interrupt: OnInterrupt,
        redraw: Box<dyn Fn() + Send>,
    ) -> std::io::Result<Keys> {
        let stdin = std::io::stdin();
        let original = tcgetattr(&stdin)?;
        let terminal = Arc::new(stdin.as_fd().try_clone_to_owned()?);
        let feed = Arc::new(Feed::new(&original)?);
        let editor_side = feed.open_editor_side()?;
        let (stop, stopped) = UnixStream::pair()?;
        let (continued_wake, continued) = UnixStream::pair()?;
        continued.set_nonblocking(true)?;
        let mut keys = Keys {
            feed: feed.clone(),
            terminal: terminal.clone(),
            original: original.clone(),
            continued: None,
            stop: Some(stop),
            thread: None,
        };
        keys.continued = Some(signal_hook::low_level::pipe::register(
            Signal::SIGCONT as i32,
            continued_wake,
        )?);
        let session = session_mode(&original);
        tcsetattr(&*terminal, SetArg::TCSADRAIN, &session)?;
        write_terminal(BRACKETED_PASTE_ON);
        if let Err(e) = nix::unistd::dup2_stdin(&editor_side) {
            keys.close();
            return Err(e.into());
        }
        let reader = Reader {
            feed,
            terminal,
            original,
            session,
            decoder: Decoder::new(SpecialKeys::of(&keys.original)),
            on_interrupt,
            redraw,
        };
        let thread = std::thread::Builder::new()
            .name("repl-keys".into())
            .spawn(move || reader.run(&stopped, &continued));
        match thread {
            Ok(thread) => keys.thread = Some(thread),
            Err(e) => {
                keys.close();
                return Err(e);
            }
        }
        Ok(keys)
    }

    pub(crate) fn feed(&self) -> Arc<Feed> {
        self.feed.clone()
    }

    /// Stops the thread and gives the terminal back as it was, on fd 0.
    pub(crate) fn close(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        if let Some(id) = self.continued.take() {
            signal_hook::low_level::unregister(id);
        }
        let _ = tcsetattr(&*self.terminal, SetArg::TCSADRAIN, &self.original);
        write_terminal(BRACKETED_PASTE_OFF);
        if let Err(e) = nix::unistd::dup2_stdin(&*self.terminal) {
            log::warn!("cannot give the terminal back to stdin: {e}");
        }
    }
}

impl Drop for Keys {
    fn drop(&mut self) {
        if self.stop.is_some() {
            self.close();
        }
    }
}

/// Writes a control sequence to the terminal (it is on stdout too).
fn write_terminal(sequence: &[u8]) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(sequence).and_then(|()| out.flush());
}

/// The thread's side: reads the terminal, decodes, queues and feeds.
struct Reader {
    feed: Arc<Feed>,
    terminal: Arc<OwnedFd>,
    original: Termios,
    session: Termios,
    decoder: Decoder,
    on_interrupt: OnInterrupt,
    /// Has the editor draw its prompt and line again.
    redraw: Box<dyn Fn() + Send>,
}

impl Reader {
    fn run(mut self, stopped: &UnixStream, continued: &UnixStream) {
        let mut terminal_open = true;
        let mut buf = [0u8; 4096];
        loop {
            let wants_room = self.feed.wants_room();
            let (stop, resumed, woken, typed, room) = {
                let mut fds = vec![
                    PollFd::new(stopped.as_fd(), PollFlags::POLLIN),
                    PollFd::new(continued.as_fd(), PollFlags::POLLIN),
                    PollFd::new(self.feed.woken.as_fd(), PollFlags::POLLIN),
                ];
                let typed_at = terminal_open.then(|| {
                    fds.push(PollFd::new(self.terminal.as_fd(), PollFlags::POLLIN));
                    fds.len() - 1
                });
                let room_at = wants_room.then(|| {
                    fds.push(PollFd::new(self.feed.master.as_fd(), PollFlags::POLLOUT));
                    fds.len() - 1
                });
                match poll(&mut fds, PollTimeout::NONE) {
                    Ok(_) => {}
                    Err(Errno::EINTR) => continue,
                    Err(e) => {
                        log::error!("cannot wait for the terminal's input: {e}");
                        return;
                    }
                }
                let ready = |at: Option<usize>| {
                    at.is_some_and(|at| fds[at].revents().is_some_and(|r| !r.is_empty()))
                };
                (
                    ready(Some(0)),
                    ready(Some(1)),
                    ready(Some(2)),
                    ready(typed_at),
                    ready(room_at),
                )
            };
            if stop {
                return;
            }
            if resumed {
                // In the foreground again after a stop, the terminal has the shell's
                // settings, and the shell has written below the prompt: the editor
                // draws it again (nothing is drawn while a statement runs).
                drain(continued);
                self.take_terminal();
                (self.redraw)();
            }
            if woken {
                drain(&self.feed.woken);
            }
            if typed {
                match nix::unistd::read(&*self.terminal, &mut buf) {
                    Ok(0) => terminal_open = false,
                    Ok(n) => {
                        let pieces = self.decoder.decode(&buf[..n]);
                        self.pass_on(pieces);
                    }
                    Err(Errno::EINTR | Errno::EAGAIN) => {}
                    Err(e) => {
                        log::debug!("the terminal's input ended: {e}");
                        terminal_open = false;
                    }
                }
                if !terminal_open {
                    let feed = &self.feed;
                    feed.end(&mut feed.lock());
                }
            }
            if room {
                let feed = &self.feed;
                feed.give(&mut feed.lock());
            }
        }
    }

    /// Queues the keys, in order. The interrupt key stops a running statement (and
    /// is the editor's otherwise); the suspend key stops the process at any time, as
    /// it does in cooked mode (the editor's own Ctrl-Z would stop it with the terminal
    /// in raw mode, which a shell may not undo).
    fn pass_on(&self, pieces: Vec<Piece>) {
        let feed = &self.feed;
        for piece in pieces {
            match piece {
                Piece::Keys(bytes) => {
                    feed.push(&mut feed.lock(), &bytes);
                }
                Piece::Interrupt(key) => {
                    let mut queue = feed.lock();
                    if queue.feeding {
                        feed.push(&mut queue, &[key]);
                    } else {
                        drop(queue);
                        self.interrupt();
                    }
                }
                Piece::Suspend(_) => self.suspend(),
            }
        }
    }

    /// Raised on this thread, a signal is delivered before `raise` returns: when its
    /// default action ends or stops the process, that has happened by then.
    fn interrupt(&self) {
        if self.on_interrupt == OnInterrupt::Exit {
            self.give_terminal_back();
        }
        let _ = raise(Signal::SIGINT);
        if self.on_interrupt == OnInterrupt::Exit {
            // Still here: SIGINT is ignored, and the session goes on.
            self.take_terminal();
        }
    }

    /// Stops the process, as the suspend key does in cooked mode, with the terminal
    /// as the shell expects it; goes on once continued (or at once, where nobody could
    /// continue it and the kernel dropped the signal).
    fn suspend(&self) {
        self.give_terminal_back();
        let _ = raise(Signal::SIGTSTP);
        self.take_terminal();
    }

    fn take_terminal(&self) {
        let _ = tcsetattr(&*self.terminal, SetArg::TCSADRAIN, &self.session);
        write_terminal(BRACKETED_PASTE_ON);
    }

    fn give_terminal_back(&self) {
        let _ = tcsetattr(&*self.terminal, SetArg::TCSADRAIN, &self.original);
        write_terminal(BRACKETED_PASTE_OFF);
    }
}

/// Reads a wake-up socket empty.
fn drain(socket: &UnixStream) {
    let mut buf = [0u8; 64];
    while let Ok(n) = std::io::Read::read(&mut &*socket, &mut buf) {
        if n == 0 {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEYS: SpecialKeys = SpecialKeys {
        interrupt: 0x03,
        quit: 0x1c,
        suspend: 0x1a,
        end_of_file: 0x04,
    };

    fn keys(bytes: &[u8]) -> Piece {
        Piece::Keys(bytes.to_vec())
    }

    fn decode_all(reads: &[&[u8]]) -> Vec<Piece> {
        let mut decoder = Decoder::new(KEYS);
        let mut pieces = Pieces::default();
        for read in reads {
            for piece in decoder.decode(read) {
                match piece {
                    Piece::Keys(bytes) => pieces.keys(&bytes),
                    other => pieces.0.push(other),
                }
            }
        }
        pieces.0
    }

    #[test]
    fn typed_keys_pass_as_they_are() {
        assert_eq!(
            decode_all(&[b"let x = 40;\rx + 2\r\x1b[A\t\x04"]),
            [keys(b"let x = 40;\rx + 2\r\x1b[A\t\x04")]
        );
        // A lone ESC is not held back.
        let mut decoder = Decoder::new(KEYS);
        assert_eq!(decoder.decode(b"ab\x1b"), [keys(b"ab\x1b")]);
    }

    #[test]
    fn invalid_utf8_is_replaced_and_a_cut_character_waits() {
        assert_eq!(
            decode_all(&[b"a\xffb\xc3"]),
            [keys("a\u{FFFD}b".as_bytes())]
        );
        assert_eq!(
            decode_all(&[b"a\xc3", b"\xa9b"]),
            [keys("a\u{e9}b".as_bytes())]
        );
        assert_eq!(
            decode_all(&[b"\xe2\x82", b"x"]),
            [keys("\u{FFFD}x".as_bytes())]
        );
    }

    #[test]
    fn a_paste_becomes_one_paste_and_enter_per_line() {
        let pieces = decode_all(&[b"\x1b[200~let y = 5;\ny * 2\r\n\n\tz\x03\x1b[201~"]);
        assert_eq!(
            pieces,
            [keys(
                b"\x1b[200~let y = 5;\x1b[201~\r\x1b[200~y * 2\x1b[201~\r\r\x1b[200~\tz\x03\x1b[201~"
            )]
        );
        // Cut anywhere, the same; but right after the ESC of the opening marker, since
        // a lone ESC is a key and goes on at once (terminals send the marker whole).
        let whole: &[u8] = b"x\x1b[200~a\r\nb\nc\x1b[201~y";
        let expected = decode_all(&[whole]);
        for cut in (0..whole.len()).filter(|&cut| cut != 2) {
            let (first, second) = whole.split_at(cut);
            assert_eq!(decode_all(&[first, second]), expected, "cut at {cut}");
        }
        assert_eq!(
            expected,
            [keys(
                b"x\x1b[200~a\x1b[201~\r\x1b[200~b\x1b[201~\r\x1b[200~c\x1b[201~y"
            )]
        );
    }

    #[test]
    fn job_control_keys_are_picked_out_of_typing_only() {
        assert_eq!(
            decode_all(&[b"a\x03b\x1cc\x1a"]),
            [
                keys(b"a"),
                Piece::Interrupt(0x03),
                keys(b"b"),
                Piece::Interrupt(0x1c),
                keys(b"c"),
                Piece::Suspend(0x1a)
            ]
        );
        assert_eq!(
            decode_all(&[b"\x1b[200~\x03\x1a\x1b[201~"]),
            [keys(b"\x1b[200~\x03\x1a\x1b[201~")]
        );
        // A disabled key (0) is no key at all.
        let mut decoder = Decoder::new(SpecialKeys {
            interrupt: 0,
            ..KEYS
        });
        assert_eq!(decoder.decode(b"\0"), [keys(b"\0")]);
    }

    #[test]
    fn any_bytes_decode_to_utf8_without_the_push_byte() {
        // Arbitrary input, cut into arbitrary reads: no panic, and what goes to the
        // editor is valid UTF-8 (so it never holds `PUSH`).
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let alphabet = b"\x1b[2001~\r\n\x03\x1a\x04a\xc3\xa9\xff\x80\xe2";
        for _ in 0..500 {
            let mut decoder = Decoder::new(KEYS);
            let mut given = Vec::new();
            for _ in 0..(next() % 8) {
                let read: Vec<u8> = (0..(next() % 24))
                    .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                    .collect();
                for piece in decoder.decode(&read) {
                    if let Piece::Keys(bytes) = piece {
                        given.extend(bytes);
                    }
                }
            }
            assert!(std::str::from_utf8(&given).is_ok(), "{given:?}");
        }
    }

    /// A feeder on a real pseudo-terminal, and the editor's side of it.
    fn feeder() -> (Feed, std::fs::File) {
        // Any terminal's settings will do: a fresh pseudo-terminal's.
        let mut base = tcgetattr(&nix::pty::openpty(None, None).unwrap().slave).unwrap();
        base.control_chars[Cc::VINTR as usize] = KEYS.interrupt;
        base.control_chars[Cc::VEOF as usize] = KEYS.end_of_file;
        let feed = Feed::new(&base).unwrap();
        let editor = feed.open_editor_side().unwrap();
        (feed, editor)
    }

    /// Reads what one read gives, as the editor would (failing rather than waiting
    /// for ever when nothing comes).
    fn editor_read(editor: &std::fs::File) -> Vec<u8> {
        let mut fds = [PollFd::new(editor.as_fd(), PollFlags::POLLIN)];
        let ready = poll(&mut fds, PollTimeout::from(10_000u16)).unwrap();
        assert_eq!(ready, 1, "the editor's side has nothing to read");
        let mut buf = [0u8; 1024];
        let n = std::io::Read::read(&mut &*editor, &mut buf).unwrap();
        buf[..n].to_vec()
    }

    fn waiting(feed: &Feed) -> Vec<u8> {
        feed.lock().waiting.iter().copied().collect()
    }

    #[test]
    fn each_read_ends_at_a_key_that_may_end_a_line_and_the_rest_comes_back() {
        let (feed, editor) = feeder();
        feed.push(&mut feed.lock(), b"let x = 40;\rx + 2\r");
        // Not fed before the editor reads.
        assert_eq!(waiting(&feed), b"let x = 40;\rx + 2\r");
        feed.editor_reading();
        assert_eq!(editor_read(&editor), b"let x = 40;\r");
        feed.editor_done();
        assert_eq!(waiting(&feed), b"x + 2\r");

        feed.push(&mut feed.lock(), b"ab\x03cd\x04ef");
        feed.editor_reading();
        assert_eq!(editor_read(&editor), b"x + 2\r");
        assert_eq!(editor_read(&editor), b"ab\x03");
        assert_eq!(editor_read(&editor), b"cd\x04");
        feed.editor_done();
        assert_eq!(waiting(&feed), b"ef");
        feed.editor_reading();
        // What comes while the editor reads is handed on at once.
        feed.push(&mut feed.lock(), b"gh");
        assert_eq!(editor_read(&editor), b"ef");
        assert_eq!(editor_read(&editor), b"gh");
        feed.editor_done();
        assert!(waiting(&feed).is_empty());
    }

    #[test]
    fn a_long_line_comes_whole_and_what_was_not_read_comes_back_whole() {
        let (feed, editor) = feeder();
        let line: Vec<u8> = (0..9000).map(|i| b'a' + (i % 26) as u8).collect();
        let mut input = line.clone();
        input.extend_from_slice(b"\rnext\r\0after");
        feed.editor_reading();
        let more = feed.push(&mut feed.lock(), &input);
        let mut got = Vec::new();
        while !got.ends_with(b"\r") {
            got.extend(editor_read(&editor));
            // Room frees as the editor reads: the thread's part.
            if more {
                feed.give(&mut feed.lock());
            }
        }
        assert_eq!(got[..got.len() - 1], line[..]);
        feed.editor_done();
        assert_eq!(waiting(&feed), b"next\r\0after");
    }

    #[test]
    fn after_the_end_of_the_terminal_every_read_ends() {
        let (feed, editor) = feeder();
        feed.push(&mut feed.lock(), b"1 + 1\r");
        feed.end(&mut feed.lock());
        feed.editor_reading();
        assert_eq!(editor_read(&editor), b"1 + 1\r");
        assert_eq!(editor_read(&editor), b"");
        feed.editor_done();
        feed.editor_reading();
        assert_eq!(editor_read(&editor), b"");
        feed.editor_done();
    }
}
