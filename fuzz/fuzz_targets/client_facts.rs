//! Fuzz target `client_facts`: see `tower_auth_session::fuzzing::check_client_facts` for the input layout
//! and the properties checked.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tower_auth_session::fuzzing::check_client_facts(data));
