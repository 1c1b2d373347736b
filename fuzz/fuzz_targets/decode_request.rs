//! Fuzzes the control protocol's request decoder: whatever bytes a client sends as a
//! line, `decode` returns a request or an error, never panics; a request re-encodes to
//! a line that decodes to the same request; an error becomes one response line.

#![no_main]

use libfuzzer_sys::fuzz_target;
use rhai_supervisor::control::{Response, decode};

fuzz_target!(|line: &[u8]| {
    match decode(line) {
        Ok(request) => {
            let encoded = serde_json::to_vec(&request.to_json()).expect("a request encodes");
            let again = decode(&encoded).expect("an encoded request decodes");
            assert_eq!(again, request);
        }
        Err(rejected) => {
            assert!(!rejected.error.is_empty());
            let answer = Response::error(rejected.id, rejected.error).to_line();
            assert_eq!(answer.iter().filter(|&&b| b == b'\n').count(), 1);
            assert!(answer.ends_with(b"\n"));
            let back: Response = serde_json::from_slice(&answer).expect("a response decodes");
            assert!(!back.ok);
        }
    }
});
