//! Dovecot's tab escaping (`str_tabescape` / `str_tabunescape`): 0x01 is the escape byte.
//! See `../shared/reference/anvil-protocol.md` §3 for every edge case.

/// Appends `raw` to `out`, escaped: 0x01 -> `\x01 1`, TAB -> `\x01 t`, LF -> `\x01 n`,
/// CR -> `\x01 r`; every other byte unchanged. NUL is not escaped (stored values never hold it).
pub fn escape_into(raw: &[u8], out: &mut Vec<u8>) {
    let _ = (raw, out);
    todo!()
}

/// Like [`escape_into`], returning a new vector.
pub fn escape(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    escape_into(raw, &mut out);
    out
}

/// Unescapes one field as stock anvil does, then truncates at the first NUL (C string).
/// `\x01 0` -> NUL, `\x01 1` -> 0x01, `\x01 t` -> TAB, `\x01 r` -> CR, `\x01 n` -> LF,
/// `\x01 X` -> X for any other X, a trailing lone 0x01 is dropped. Borrows when `field` holds
/// no 0x01 and no NUL.
pub fn unescape(field: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    let _ = field;
    todo!()
}

/// Splits a line (already framed: no LF, CR stripped, cut at NUL) into unescaped fields.
/// An empty line gives zero fields; otherwise every TAB splits (an escape never protects a
/// TAB) and empty fields are kept.
pub fn split_fields(line: &[u8]) -> Vec<std::borrow::Cow<'_, [u8]>> {
    let _ = line;
    todo!()
}
