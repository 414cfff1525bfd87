//! Feeds arbitrary bytes to the receive path: envelope size cap and strict decode, then open
//! (kind, payload cap, strict signature check, strict record decode and field limits).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| drop(voicechat_protocol::Envelope::decode(data).and_then(|e| e.open())));
