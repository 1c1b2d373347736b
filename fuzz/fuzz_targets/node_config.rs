//! NodeConfig decoding, both ways it reaches the supervisor: JSON (a node's payload, a
//! control request) and a Rhai object map (a script's `Supervisor::create(#{...})`).
//! Neither may panic, whatever the bytes; what decodes must validate without panicking,
//! print, and survive a JSON round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rhai_supervisor::NodeConfig;
use rhai_supervisor::script::records::{self, from_map};

fuzz_target!(|data: &[u8]| {
    if let Ok(config) = serde_json::from_slice::<NodeConfig>(data) {
        let _ = config.validate();
        let _ = config.rotation();
        let json = serde_json::to_string(&config).expect("a decoded config encodes");
        let back: NodeConfig = serde_json::from_str(&json).expect("and decodes again");
        assert_eq!(back.name, config.name);
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let engine = rhai::Engine::new_raw();
    if let Ok(map) = engine.parse_json(text, true) {
        if let Ok(config) = from_map::<NodeConfig>(map) {
            let _ = config.validate();
            let _ = records::show(&config);
            let _ = records::debug(&config);
        }
    }
});
