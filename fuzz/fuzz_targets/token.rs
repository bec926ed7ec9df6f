//! Any bytes as a token on `$connect`: the authorizer must refuse without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use livesync_handlers::authorizer::Authorizer;

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else { return };
    let authorizer = Authorizer::hs256(b"a-fuzzing-secret-of-at-least-32-bytes").unwrap();
    assert!(authorizer.authorize(Some(token), None, "c").is_err(), "noise was let in: {token:?}");
});
