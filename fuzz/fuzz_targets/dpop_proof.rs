#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| catalio_operator::fuzz::dpop_proof(data));
