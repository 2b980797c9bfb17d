#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| catalio_operator::fuzz::client_key_assertion(data));
