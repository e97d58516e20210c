//! Fuzz target `cookie_cache`: see `tower_auth_session::fuzzing::check_cookie_cache` for the input layout
//! and the properties checked.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tower_auth_session::fuzzing::check_cookie_cache(data));
