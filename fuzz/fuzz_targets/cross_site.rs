//! Fuzz target `cross_site`: see `tower_auth_session::fuzzing::check_cross_site` for the input layout
//! and the properties checked.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tower_auth_session::fuzzing::check_cross_site(data));
