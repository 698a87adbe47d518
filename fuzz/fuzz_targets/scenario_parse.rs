//! Any bytes as a scenario file: the loader may refuse them, never panic or hang.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The file loader refuses what is not UTF-8 before parsing; the parser sees only text.
    if let Ok(text) = std::str::from_utf8(data) {
        // Anchored in the corpus folder, so HTTP and image file checks find real files.
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/corpus/fuzz.yaml");
        let _ = netboot_harness::scenario::load_str(&path, text);
    }
});
