//! Cursor decoding of client text: never panics, and anything it accepts
//! names a position whose issued (canonical) cursor decodes to the same one.

#![no_main]

use libfuzzer_sys::fuzz_target;
use threadstore::domain::Cursor;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Ok(c) = Cursor::decode(s) {
        let canonical = c.encode();
        assert_eq!(Cursor::decode(&canonical), Ok(c), "canonical form of {s:?} does not round-trip");
    }
});
