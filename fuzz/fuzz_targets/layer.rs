//! Fuzz target `layer`: see `tower_auth_session::fuzzing::check_layer` for the input layout
//! and the properties checked.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tower_auth_session::fuzzing::check_layer(data));
