//! koinos-loadtest: drives simulated call participants (real WebRTC, Opus audio, VP8 video)
//! through control, the gateway and LiveKit, and reports what each one received.
//!
//! Not built yet: the tool is the subject of issue #6. Until then it refuses to run rather than
//! pretend to measure anything.

fn main() {
    eprintln!(
        "koinos-loadtest is not implemented yet (see loadtest/README.md); it would simulate \
         participants with real WebRTC through the gateway and report join times, received \
         resolutions and audio-only switches."
    );
    std::process::exit(2);
}
