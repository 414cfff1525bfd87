//! A test tap on the audio the SFU forwards, in debug builds only: with
//! `VOICECHAT_TEST_TAP=FILE`, every forwarded RTP payload is appended to FILE as
//! `ssrc (u32 BE) · length (u16 BE) · payload`. Browser tests decode it with an Opus
//! decoder to show that with end-to-end encryption the node holds no audible audio.

use std::io::Write;

/// The tap; inert unless a debug build was started with the variable set.
pub struct Tap(Option<std::io::BufWriter<std::fs::File>>);

impl Tap {
    /// From the environment (debug builds), else off.
    pub fn from_env() -> Self {
        #[cfg(debug_assertions)]
        if let Some(path) = std::env::var_os("VOICECHAT_TEST_TAP") {
            match std::fs::OpenOptions::new().create(true).append(true).open(&path) {
                Ok(f) => return Self(Some(std::io::BufWriter::new(f))),
                Err(e) => tracing::warn!(%e, "cannot open the test tap"),
            }
        }
        Self(None)
    }

    /// Records one forwarded payload.
    pub fn record(&mut self, ssrc: u32, payload: &[u8]) {
        if let Some(w) = &mut self.0 {
            let len = u16::try_from(payload.len()).unwrap_or(u16::MAX);
            let _ = w.write_all(&ssrc.to_be_bytes()).and_then(|()| w.write_all(&len.to_be_bytes())).and_then(|()| w.write_all(&payload[..usize::from(len)]));
        }
    }

    /// Writes out what was recorded.
    pub fn flush(&mut self) {
        if let Some(w) = &mut self.0 {
            let _ = w.flush();
        }
    }
}
