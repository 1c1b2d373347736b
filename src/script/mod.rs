//! The Rhai side: the engine and its limits, the loaded program, hooks and timers.
//!
//! `Host` owns the engine, the program (every function of every loaded script, plus
//! what a REPL adds) and the scope that holds the scripts' global variables. Scripts
//! run top to bottom once (`load`); afterwards only functions are called (hooks,
//! timer closures) with the same scope, never the top level again, so global `let`
//! variables keep their values across hook calls.
//!
//! `Context` is the state that native functions (`schedule`, `terminate`, ...) reach
//! from inside a script: the role, the node's own configuration, the timers and a
//! pending exit. The node table is not here: it belongs to the loop, which lends it to
//! the `Supervisor` module's functions (`Nodes`). Both are shared (`Rc<RefCell>`)
//! between the engine's functions and the loop; the loop never holds a borrow while a
//! script runs.
//!
//! `api` registers the `Supervisor` and `Cluster` modules and the builtins; `records`
//! the record types; `table` is the node table as those functions reach it, with what
//! a create means at the moment (the scripts' own node, a run-time node, or one only
//! recorded while a reload evaluates new scripts).

pub mod api;
pub mod records;
pub mod table;

use std::cell::{Cell, RefCell};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rhai::{
    AST, CallFnOptions, Dynamic, Engine, EvalAltResult, FnPtr, FuncArgs, ParseError, Position,
    Scope,
};

use crate::config::{NodeConfig, Stream};
use crate::supervisor::Supervisor;
pub use table::{Mode, Table};

/// The node table as the `Supervisor` module's functions reach it: owned by the loop
/// (`EventLoop`), borrowed for the length of one call.
pub type Nodes = Rc<RefCell<Supervisor>>;

/// Which process the scripts run in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// `rhai-supervisor run` or `repl`: `is_supervisor()`.
    Supervisor,
    /// A script node started by a supervisor: `is_supervised()`.
    Node,
    /// `rhai-supervisor exec`: neither.
    Plain,
}

/// How a script asked this process to end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitRequest {
    /// `terminate()`: a clean shutdown (nodes stopped, `zeek_done()`), exit status 0.
    Terminate,
    /// `exit(code)`: stop now with this status (nodes are still stopped; no `zeek_done()`).
    Exit(i32),
}

/// What native functions reach from inside a script.
pub struct Context {
    /// Which process the scripts run in.
    pub role: Role,
    /// This node's configuration, in a supervised node.
    pub node: Option<NodeConfig>,
    /// `schedule`d closures.
    pub timers: Timers,
    /// A pending `terminate()` or `exit(code)`.
    pub exit: Option<ExitRequest>,
    /// When the running script call must stop (`None`: not limited). Shared with the
    /// engine's progress check; native calls that start or stop processes move it on
    /// by the time they took (`api::uncounted`).
    pub call_deadline: Rc<Cell<Option<Instant>>>,
}

/// The context as the engine and the loop share it.
pub type Shared = Rc<RefCell<Context>>;

impl Context {
    /// A context for `role`, with nothing pending.
    pub fn new(role: Role) -> Context {
        Context {
            role,
            node: None,
            timers: Timers::default(),
            exit: None,
            call_deadline: Rc::default(),
        }
    }

    /// Shares the context.
    pub fn shared(self) -> Shared {
        Rc::new(RefCell::new(self))
    }

    /// Asks for this process to end.
    pub fn request_exit(&mut self, request: ExitRequest) {
        // An explicit exit code wins over an earlier terminate().
        match (self.exit, request) {
            (None, _) | (Some(ExitRequest::Terminate), ExitRequest::Exit(_)) => {
                self.exit = Some(request)
            }
            _ => {}
        }
    }
}

/// `schedule(millis, closure)` timers, run by the loop when due.
#[derive(Default)]
pub struct Timers {
    due: BinaryHeap<Reverse<(Instant, u64)>>,
    callbacks: HashMap<u64, FnPtr>,
    next_id: u64,
}

impl Timers {
    /// Runs `callback` at `at`.
    pub fn add(&mut self, at: Instant, callback: FnPtr) {
        let id = self.next_id;
        self.next_id += 1;
        self.due.push(Reverse((at, id)));
        self.callbacks.insert(id, callback);
    }

    /// When the earliest callback is due.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.due.peek().map(|Reverse((at, _))| *at)
    }

    /// The earliest callback due at `now`, if any.
    pub fn pop_due(&mut self, now: Instant) -> Option<FnPtr> {
        match self.due.peek() {
            Some(Reverse((at, _))) if *at <= now => {
                let Reverse((_, id)) = self.due.pop()?;
                self.callbacks.remove(&id)
            }
            _ => None,
        }
    }

    /// No callback is waiting.
    pub fn is_empty(&self) -> bool {
        self.due.is_empty()
    }

    /// Forgets every callback (at shutdown).
    pub fn clear(&mut self) {
        self.due.clear();
        self.callbacks.clear();
    }
}

/// The limits every script call runs under, the same in debug and release builds.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Wall-clock time one call (a file's top level, a hook, a timer) may take.
    pub call_time: Duration,
    /// How deep calls may nest.
    pub call_levels: usize,
    /// How deep an expression may nest at the top level.
    pub expr_depth: usize,
    /// How deep an expression may nest in a function.
    pub function_expr_depth: usize,
    /// The longest string, in bytes.
    pub string_size: usize,
    /// The most items in an array.
    pub array_size: usize,
    /// The most entries in a map.
    pub map_size: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            call_time: crate::config::DEFAULT_CALL_TIME,
            call_levels: 48,
            expr_depth: 64,
            function_expr_depth: 48,
            string_size: 16 * 1024 * 1024,
            array_size: 1024 * 1024,
            map_size: 1024 * 1024,
        }
    }
}

/// A script that failed, with where (file, line, column) when known.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.render())]
pub struct ScriptError {
    /// The script file, when the error is in one.
    pub file: Option<String>,
    /// The line, from 1.
    pub line: Option<usize>,
    /// The column, from 1.
    pub column: Option<usize>,
    /// What went wrong.
    pub message: String,
}

impl ScriptError {
    fn plain(file: Option<&str>, message: String) -> ScriptError {
        ScriptError {
            file: file.map(str::to_string),
            line: None,
            column: None,
            message,
        }
    }

    fn at(file: Option<&str>, pos: Position, message: String) -> ScriptError {
        ScriptError {
            file: file.map(str::to_string),
            line: pos.line(),
            column: pos.position(),
            message,
        }
    }

    fn parse(file: Option<&str>, error: &ParseError) -> ScriptError {
        ScriptError::at(
            file,
            error.position(),
            strip_position(&error.err_type().to_string()),
        )
    }

    fn eval(file: Option<&str>, error: &EvalAltResult) -> ScriptError {
        ScriptError::at(file, error.position(), describe(error))
    }

    /// `file:line:column: message`, leaving out what is not known.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Some(file) = &self.file {
            out.push_str(file);
        }
        if let Some(line) = self.line {
            if self.file.is_some() {
                out.push_str(&format!(":{line}"));
            } else {
                out.push_str(&format!("line {line}"));
            }
            if let Some(column) = self.column {
                if self.file.is_some() {
                    out.push_str(&format!(":{column}"));
                } else {
                    out.push_str(&format!(", column {column}"));
                }
            }
        }
        if out.is_empty() {
            self.message.clone()
        } else {
            format!("{out}: {}", self.message)
        }
    }
}

/// Removes rhai's trailing ` (line 3, position 5)`: the position is shown in front.
fn strip_position(text: &str) -> String {
    match text.rfind(" (line ") {
        Some(i) if text.ends_with(')') => text[..i].to_string(),
        _ => text.to_string(),
    }
}

/// A runtime error as one readable message, with the chain of calls it went through.
fn describe(error: &EvalAltResult) -> String {
    match error {
        EvalAltResult::ErrorInFunctionCall(name, _, inner, _) => {
            let pos = inner.position();
            let at = match (pos.line(), pos.position()) {
                (Some(l), Some(c)) => format!(" at {l}:{c}"),
                _ => String::new(),
            };
            format!("in {}{at}: {}", function_name(name), describe(inner))
        }
        EvalAltResult::ErrorTerminated(token, _) => {
            if token.is_string() {
                token.to_string()
            } else {
                "the script was stopped".into()
            }
        }
        EvalAltResult::ErrorRuntime(value, _) if value.is_string() => value.to_string(),
        other => strip_position(&other.to_string()),
    }
}

/// `function 'f'`, or `a closure` for rhai's generated `anon$...` names.
fn function_name(name: &str) -> String {
    if name.starts_with("anon$") {
        "a closure".into()
    } else {
        format!("function '{name}'")
    }
}

thread_local! {
    static STANDARD_PACKAGE: std::cell::OnceCell<rhai::Shared<rhai::Module>> = const { std::cell::OnceCell::new() };
}

/// Rhai's standard library (strings, arrays, maps, math, ...), built on first use and
/// shared by every engine of the thread. Building it is most of what an engine costs,
/// so the stem builds it before it forks nodes, which then find it ready.
pub fn standard_package() -> rhai::Shared<rhai::Module> {
    use rhai::packages::Package;
    STANDARD_PACKAGE.with(|cell| {
        cell.get_or_init(|| rhai::packages::StandardPackage::new().as_shared_module())
            .clone()
    })
}

/// The hooks a script may define, by name and number of parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    /// `zeek_init()`
    ZeekInit,
    /// `zeek_done()`
    ZeekDone,
    /// `node_status(node, pid)`
    NodeStatus,
    /// `stdout_hook(node, line)`
    StdoutHook,
    /// `stderr_hook(node, line)`
    StderrHook,
    /// `node_ready(node)`
    NodeReady,
    /// `node_exit(node, exit)`
    NodeExit,
}

impl Hook {
    /// Every hook.
    pub const ALL: [Hook; 7] = [
        Hook::ZeekInit,
        Hook::ZeekDone,
        Hook::NodeStatus,
        Hook::StdoutHook,
        Hook::StderrHook,
        Hook::NodeReady,
        Hook::NodeExit,
    ];

    /// The function name a script defines.
    pub fn name(self) -> &'static str {
        match self {
            Hook::ZeekInit => "zeek_init",
            Hook::ZeekDone => "zeek_done",
            Hook::NodeStatus => "node_status",
            Hook::StdoutHook => "stdout_hook",
            Hook::StderrHook => "stderr_hook",
            Hook::NodeReady => "node_ready",
            Hook::NodeExit => "node_exit",
        }
    }

    /// How many parameters it takes.
    pub fn arity(self) -> usize {
        match self {
            Hook::ZeekInit | Hook::ZeekDone => 0,
            Hook::NodeReady => 1,
            Hook::NodeStatus | Hook::StdoutHook | Hook::StderrHook | Hook::NodeExit => 2,
        }
    }
}

/// The engine, the loaded program and its global variables.
pub struct Host {
    engine: Engine,
    /// Every function defined so far; no statements.
    program: AST,
    scope: Scope<'static>,
    shared: Shared,
    limits: Limits,
    /// When the running call must stop; `None` when no call is limited.
    deadline: Rc<Cell<Option<Instant>>>,
    /// Which file defined each function, and where its body starts, for error
    /// messages.
    function_files: BTreeMap<String, (String, Position)>,
    /// The scripts' global variables as shared values, for functions to find by name.
    globals: Rc<RefCell<HashMap<String, Dynamic>>>,
    defined: [bool; Hook::ALL.len()],
    /// The node table as this engine's `Supervisor` functions reach it.
    table: Option<Rc<Table>>,
}

impl Host {
    /// A host for `shared`'s role. `interrupt`, when set (by a signal handler), stops a
    /// running call so the loop can handle the signal.
    /// `nodes` is the node table, in the supervisor role.
    pub fn new(
        shared: Shared,
        nodes: Option<Nodes>,
        limits: Limits,
        interrupt: Arc<AtomicBool>,
    ) -> Host {
        // `Engine::new` without its printing defaults, and with the standard library
        // built once per process (see `standard_package`).
        let mut engine = Engine::new_raw();
        engine.register_global_module(standard_package());
        engine.set_module_resolver(rhai::module_resolvers::FileModuleResolver::new());
        engine.set_max_strings_interned(256);
        engine
            .set_max_call_levels(limits.call_levels)
            .set_max_expr_depths(limits.expr_depth, limits.function_expr_depth)
            .set_max_string_size(limits.string_size)
            .set_max_array_size(limits.array_size)
            .set_max_map_size(limits.map_size);
        engine.on_print(|text| crate::console::script_line(Stream::Stdout, text));
        engine.on_debug(|text, source, pos| {
            let at = match (source, pos.line()) {
                (Some(s), Some(l)) => format!("{s}:{l}: "),
                (None, Some(l)) => format!("line {l}: "),
                _ => String::new(),
            };
            crate::console::script_line(Stream::Stderr, &format!("{at}{text}"));
        });
        let deadline = shared.borrow().call_deadline.clone();
        let progress_deadline = deadline.clone();
        let out_of_time = format!(
            "stopped after {:?}: a script call may not run longer (a loop that never ends?)",
            limits.call_time
        );
        engine.on_progress(move |ops| {
            if ops % 512 != 0 {
                return None;
            }
            if interrupt.load(Ordering::Relaxed) {
                return Some("interrupted by a signal".into());
            }
            match progress_deadline.get() {
                Some(at) if Instant::now() > at => Some(out_of_time.as_str().into()),
                _ => None,
            }
        });
        // Rhai functions cannot see the caller's variables; Zeek scripts expect globals
        // to be visible everywhere. A variable a function does not have itself is looked
        // up among the published globals, which are shared values, so a function that
        // assigns to one changes the one global (constants stay read-only).
        let globals: Rc<RefCell<HashMap<String, Dynamic>>> = Rc::default();
        let lookup = globals.clone();
        #[allow(deprecated)] // `on_var` is marked volatile, not deprecated
        engine.on_var(move |name, index, context| {
            if index > 0 || context.scope().contains(name) {
                return Ok(None);
            }
            Ok(lookup.borrow().get(name).cloned())
        });
        let table = nodes.map(|nodes| Rc::new(Table::new(nodes)));
        api::register(&mut engine, &shared, table.clone());
        Host {
            engine,
            program: AST::empty(),
            scope: Scope::new(),
            shared,
            limits,
            deadline,
            function_files: BTreeMap::new(),
            globals,
            defined: [false; Hook::ALL.len()],
            table,
        }
    }

    /// The node table as this engine's `Supervisor` functions reach it (in the
    /// supervisor role), to change what their calls mean (`Mode`).
    pub fn table(&self) -> Option<&Rc<Table>> {
        self.table.as_ref()
    }

    /// The limits every call runs under.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// The context the native functions reach.
    pub fn shared(&self) -> &Shared {
        &self.shared
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Loads `files` as one program: all are compiled first (so a syntax error anywhere
    /// runs nothing), then their top levels run in order with shared global variables,
    /// each able to call functions of any of them.
    pub fn load(&mut self, files: &[PathBuf]) -> Result<(), ScriptError> {
        let mut compiled = Vec::with_capacity(files.len());
        for path in files {
            let name = display(path);
            let text = std::fs::read_to_string(path).map_err(|e| {
                ScriptError::plain(
                    None,
                    format!(
                        "cannot read script '{name}': {}",
                        crate::process::os_error(&e)
                    ),
                )
            })?;
            let mut ast = self
                .engine
                .compile_with_scope(&self.scope, &text)
                .map_err(|e| ScriptError::parse(Some(&name), &e))?;
            ast.set_source(name.clone());
            compiled.push((name, ast));
        }
        for (name, ast) in &compiled {
            self.program += ast.clone_functions_only();
            for f in ast.iter_fn_def() {
                let body = f.body.start_position();
                self.function_files
                    .insert(f.name.to_string(), (name.clone(), body));
            }
        }
        self.refresh_hooks();
        for (name, ast) in compiled {
            self.run_top_level(&ast, Some(self.limits.call_time))
                .map_err(|e| ScriptError::eval(Some(&name), &e))
                .map(drop)?;
            if self.shared.borrow().exit.is_some() {
                break;
            }
        }
        Ok(())
    }

    /// Runs one piece of code (a REPL line, a control `eval`) in the program: its
    /// functions are kept, its variables join the globals.
    pub fn eval(&mut self, code: &str) -> Result<Dynamic, ScriptError> {
        self.eval_limited(code, Some(self.limits.call_time))
    }

    /// As `eval`, with `call_time` as its time limit instead of the usual one; `None`
    /// runs it without one (an interactive session, where Ctrl-C stops a statement).
    pub fn eval_limited(
        &mut self,
        code: &str,
        call_time: Option<Duration>,
    ) -> Result<Dynamic, ScriptError> {
        let ast = self
            .engine
            .compile_with_scope(&self.scope, code)
            .map_err(|e| ScriptError::parse(None, &e))?;
        self.program += ast.clone_functions_only();
        self.refresh_hooks();
        self.run_top_level(&ast, call_time)
            .map_err(|e| ScriptError::eval(None, &e))
    }

    /// Runs the top-level statements of `ast` one at a time (with every function of the
    /// program), publishing the global variables after each, so a function called from
    /// the next statement already sees a global defined by the previous one. Returns
    /// the value of the last statement.
    fn run_top_level(
        &mut self,
        ast: &AST,
        call_time: Option<Duration>,
    ) -> Result<Dynamic, Box<EvalAltResult>> {
        let functions = self.program.shared_lib().clone();
        let source = ast.source().unwrap_or_default().to_string();
        self.limited_for(call_time, |host| {
            let mut last = Dynamic::UNIT;
            for statement in ast.statements() {
                let one =
                    AST::new_with_source([statement.clone()], functions.clone(), source.as_str());
                let result = host
                    .engine
                    .eval_ast_with_scope::<Dynamic>(&mut host.scope, &one);
                host.publish_globals();
                last = result?;
                if host.shared.borrow().exit.is_some() {
                    break;
                }
            }
            Ok(last)
        })
    }

    /// Checks that `code` parses, without running it.
    pub fn compile(&self, code: &str) -> Result<AST, ParseError> {
        self.engine.compile_with_scope(&self.scope, code)
    }

    /// Whether the program defines `hook`.
    pub fn defines(&self, hook: Hook) -> bool {
        self.defined[hook as usize]
    }

    /// Calls `hook` if the program defines it: `Ok(None)` when it does not.
    pub fn call_hook(
        &mut self,
        hook: Hook,
        args: impl FuncArgs,
    ) -> Result<Option<Dynamic>, ScriptError> {
        if !self.defines(hook) {
            return Ok(None);
        }
        // The file that defines the hook is the source its native calls see (where a
        // reload reports a refused create); the program spans files, so it is set for
        // the hook at hand, and only when it changes.
        let file = self.function_files.get(hook.name()).map(|(f, _)| f);
        if let Some(file) = file.filter(|f| self.program.source() != Some(f.as_str())) {
            self.program.set_source(file.as_str());
        }
        let options = CallFnOptions::new().eval_ast(false).rewind_scope(true);
        let result = self.limited(|host| {
            host.engine.call_fn_with_options::<Dynamic>(
                options,
                &mut host.scope,
                &host.program,
                hook.name(),
                args,
            )
        });
        match result {
            Ok(value) => Ok(Some(value)),
            Err(e) => {
                let defined = self.function_files.get(hook.name());
                let mut error = ScriptError::eval(defined.map(|(f, _)| f.as_str()), &e);
                error.message = format!("in hook '{}': {}", hook.name(), error.message);
                // Rhai gives a limit that stopped a function the position of its call,
                // which for a hook is none: the hook's body is the best we know.
                if let (None, Some((_, body))) = (error.line, defined) {
                    error.line = body.line();
                    error.column = body.position();
                }
                Err(error)
            }
        }
    }

    /// Calls a `schedule`d closure.
    pub fn call_closure(&mut self, callback: &FnPtr) -> Result<(), ScriptError> {
        let result = self.limited(|host| callback.call::<Dynamic>(&host.engine, &host.program, ()));
        match result {
            Ok(_) => Ok(()),
            Err(e) if matches!(*e, EvalAltResult::Exit(..)) => Ok(()),
            Err(e) => {
                let mut error = ScriptError::eval(None, &e);
                error.message = format!(
                    "in {} run by schedule(): {}",
                    function_name(callback.fn_name()),
                    error.message
                );
                Err(error)
            }
        }
    }

    /// Converts a value to text the way a script's `to_debug` would, so records print as
    /// records.
    pub fn show(&self, value: &Dynamic) -> String {
        if value.is_string() {
            return format!("{:?}", value.to_string());
        }
        records::render(value, true)
    }

    /// The value of a global variable (or constant), for completion.
    pub fn global(&self, name: &str) -> Option<Dynamic> {
        self.scope.get(name).map(Dynamic::flatten_clone)
    }

    /// Names of global variables and script functions, for completion.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.scope.iter().map(|(n, _, _)| n.to_string()).collect();
        names.extend(self.program.iter_functions().map(|f| f.name.to_string()));
        names
    }

    /// Runs `f` under the per-call time limit.
    fn limited<T>(
        &mut self,
        f: impl FnOnce(&mut Host) -> Result<T, Box<EvalAltResult>>,
    ) -> Result<T, Box<EvalAltResult>> {
        self.limited_for(Some(self.limits.call_time), f)
    }

    /// Runs `f` with at most `call_time` (`None`: no limit) unless an outer call
    /// already set a deadline.
    fn limited_for<T>(
        &mut self,
        call_time: Option<Duration>,
        f: impl FnOnce(&mut Host) -> Result<T, Box<EvalAltResult>>,
    ) -> Result<T, Box<EvalAltResult>> {
        let outer = self.deadline.get();
        if outer.is_none() {
            self.deadline.set(call_time.map(|t| Instant::now() + t));
        }
        let result = f(self);
        self.deadline.set(outer);
        result
    }

    /// Makes every top-level variable a shared value and publishes it for functions.
    /// A name defined twice (`let x` again) publishes the newer one.
    fn publish_globals(&mut self) {
        let mut globals = self.globals.borrow_mut();
        globals.clear();
        let names: Vec<String> = self
            .scope
            .iter_raw()
            .map(|(name, _, _)| name.to_string())
            .collect();
        for name in names {
            let value = match self.scope.get_mut(&name) {
                Some(slot) => {
                    if !slot.is_shared() {
                        *slot = std::mem::take(slot).into_shared();
                    }
                    slot.clone()
                }
                // A constant: `get_mut` refuses it, and so do functions.
                None => match self.scope.get(&name) {
                    Some(value) => value.clone().into_read_only(),
                    None => continue,
                },
            };
            globals.insert(name, value);
        }
    }

    fn refresh_hooks(&mut self) {
        for hook in Hook::ALL {
            self.defined[hook as usize] = self
                .program
                .iter_functions()
                .any(|f| f.name == hook.name() && f.params.len() == hook.arity());
        }
    }
}

fn display(path: &Path) -> String {
    path.display().to_string()
}
