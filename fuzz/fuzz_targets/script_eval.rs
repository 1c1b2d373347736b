//! Script evaluation through the public API: any text, run as a REPL line would be in a
//! process with no supervisor role (so nothing is spawned). It may fail, but it may not
//! panic, and it may not hang: every call runs under the engine's limits and a time
//! budget.
#![no_main]

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use rhai_supervisor::console::{self, Sink};
use rhai_supervisor::config::Stream;
use rhai_supervisor::script::{Context, Host, Limits, Role};

struct Discard;

impl Sink for Discard {
    fn write(&self, _: Stream, _: &[u8]) {}
}

fuzz_target!(|data: &[u8]| {
    let Ok(code) = std::str::from_utf8(data) else {
        return;
    };
    console::set_sink(Some(Box::new(Discard)));
    let limits = Limits {
        call_time: Duration::from_millis(50),
        ..Limits::default()
    };
    let mut host = Host::new(Context::new(Role::Plain).shared(), None, limits, Arc::new(AtomicBool::new(false)));
    if host.eval(code).is_ok() {
        // whatever it defined, hooks included, can be called
        let _ = host.call_hook(rhai_supervisor::script::Hook::ZeekInit, ());
        let _ = host.call_hook(rhai_supervisor::script::Hook::NodeStatus, ("n".to_string(), 1_i64));
    }
});
