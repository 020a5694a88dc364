//! Client-side encryption of replica files (`[encryption]`): the envelope an LTX file is
//! sealed in before it leaves the machine, the keyring that opens it, and nothing else.
//!
//! The envelope (format 1), byte by byte — `docs/architecture.md` says the same:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | magic `LFE1` (a plain LTX file starts with `LTX1`) |
//! | 4 | 1 | format version, `1` |
//! | 5 | 1 | cipher, `1` = AES-256-GCM |
//! | 6 | 1 | log2 of the first chunk's plaintext size, `10` (1 KiB) |
//! | 7 | 1 | log2 of every other chunk's plaintext size, `16` (64 KiB) |
//! | 8 | 1 | length *n* of the key id (1–32) |
//! | 9 | 32 | key id (ASCII, zero-padded after *n* bytes) |
//! | 41 | 24 | salt, random for every object |
//! | 65 | 16 | key check: HKDF-Expand(PRK, `"litefleet ltx v1 check"` ‖ identity, 16) |
//! | 81 | 7 | zero |
//! | 88 | … | chunk 0, chunk 1, …: each AES-256-GCM(plaintext chunk) ‖ its 16-byte tag |
//!
//! PRK = HKDF-SHA256-Extract(salt, the 32-byte key); the object key is
//! HKDF-Expand(PRK, `"litefleet ltx v1 key"` ‖ identity, 32), where the *identity* is
//! the file's level (u32), MinTXID and MaxTXID (u64s), big-endian: an object copied to
//! another file's name does not open there, and no two objects share a key. Chunk 0
//! holds the first 1 KiB of plaintext (so reading an LTX header costs ~1 KiB, not 64),
//! every later chunk 64 KiB, the last one what is left (never empty unless the whole
//! file is). Chunk *i*'s nonce is *i* as a u64 big-endian followed by a u32 that is 1
//! for the last chunk and 0 otherwise; its associated data is the whole 88-byte header.
//! So a stored object is `88 + len + 16 × chunks` bytes, the plaintext length follows
//! from the stored size (no length field: an upload is sealed as it streams), a
//! plaintext range maps to whole chunks (ranged reads stay ranged), and every change
//! fails authentication: a flipped bit, chunks reordered or swapped in from another
//! object (another key, another index), an object cut at a chunk boundary (its new
//! last chunk was not sealed as the last) or extended, an altered header.
//!
//! It knows no other module: the storage layer names the object in its errors.

use std::fmt;
use std::ops::Range;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::hkdf;
use zeroize::Zeroizing;

/// First bytes of every sealed object.
pub const MAGIC: [u8; 4] = *b"LFE1";
/// The envelope's format version.
pub const VERSION: u8 = 1;
/// Cipher byte of AES-256-GCM.
pub const CIPHER_AES_256_GCM: u8 = 1;
/// log2 of the first chunk's plaintext size.
pub const FIRST_LOG2: u8 = 10;
/// log2 of the other chunks' plaintext size.
pub const CHUNK_LOG2: u8 = 16;
/// Plaintext bytes of chunk 0.
pub const FIRST: u64 = 1 << FIRST_LOG2;
/// Plaintext bytes of every later chunk (the last may hold fewer).
pub const CHUNK: u64 = 1 << CHUNK_LOG2;
/// Authentication tag after every chunk.
pub const TAG: u64 = 16;
/// Bytes before the first chunk.
pub const HEADER_LEN: usize = 88;
/// Longest key id.
pub const MAX_KEY_ID: usize = 32;
/// Bytes of a key.
pub const KEY_LEN: usize = 32;

const SALT: Range<usize> = 41..65;
const CHECK: Range<usize> = 65..81;
const INFO_KEY: &[u8] = b"litefleet ltx v1 key";
const INFO_CHECK: &[u8] = b"litefleet ltx v1 check";

/// Why an object cannot be sealed or opened (the object's name is the caller's).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error(
        "it is encrypted (key \"{key_id}\") but no encryption keys are configured ([encryption] in the config, or `restore --keys-file`)"
    )]
    NoKeys { key_id: String },
    #[error("it is encrypted with key \"{key_id}\", which is not in the keyring (the keyring holds {known})")]
    UnknownKey { key_id: String, known: String },
    #[error(
        "key \"{key_id}\" of the keyring does not open it (a different key under the same id, or the object was renamed or its header altered)"
    )]
    WrongKey { key_id: String },
    #[error("its size ({got} bytes) is not that of any encrypted file: the object is truncated or extended")]
    Length { got: u64 },
    #[error("chunk {chunk} fails authentication: the object was altered, truncated or its chunks reordered")]
    Tampered { chunk: u64 },
    #[error("the object ends inside chunk {chunk}: it is truncated")]
    Cut { chunk: u64 },
    #[error("not a valid encrypted object: {0}")]
    Header(String),
    #[error(
        "the object was replaced while it was read (rewritten under the same name, e.g. by `litefleet reencrypt`): read it again"
    )]
    Rewritten,
    #[error("encryption failed (the system's random source or the cipher refused)")]
    Crypto,
}

impl Error {
    /// The object's bytes are damaged (altered, torn, not an envelope), as opposed to
    /// a key missing or wrong in the keyring (a configuration problem).
    pub fn is_damage(&self) -> bool {
        matches!(self, Error::Length { .. } | Error::Tampered { .. } | Error::Cut { .. } | Error::Header(_))
    }
}

/// A 32-byte key and its id. The bytes never print and are zeroed when dropped.
pub struct Key {
    id: String,
    bytes: Zeroizing<[u8; KEY_LEN]>,
}

impl Key {
    /// A fresh random key (`litefleet keygen`).
    pub fn generate(id: &str) -> Result<Key, String> {
        check_key_id(id)?;
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        aws_lc_rs::rand::fill(&mut bytes[..]).map_err(|_| "the system's random source failed".to_owned())?;
        Ok(Key { id: id.to_owned(), bytes })
    }

    /// The key's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The keyring line of this key (`<id> <64 hex digits>`): the one place a key is
    /// written out, for `litefleet keygen`.
    pub fn keyring_line(&self) -> String {
        let hex: String = self.bytes.iter().map(|b| format!("{b:02x}")).collect();
        format!("{} {hex}", self.id)
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({:?}, ***)", self.id)
    }
}

/// The keys that open replica files, and the one that seals new files.
#[derive(Debug, Default)]
pub struct Keyring {
    keys: Vec<Key>,
    /// Index in `keys` of the key new files are sealed with; `None`: open only.
    current: Option<usize>,
}

impl Keyring {
    /// Parses keyring text: one key per line, `<id> <key>`, the key as 64 hex digits or
    /// 44 characters of base64; blank lines and lines starting with `#` are skipped.
    /// Errors name the 1-based line and never echo a key.
    pub fn parse(text: &str) -> Result<Keyring, String> {
        let mut keys: Vec<Key> = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let n = i + 1;
            let mut parts = line.split_whitespace();
            let (Some(id), Some(material), None) = (parts.next(), parts.next(), parts.next()) else {
                return Err(format!("line {n}: expected \"<key id> <key>\" (`litefleet keygen` prints one)"));
            };
            check_key_id(id).map_err(|e| format!("line {n}: {e}"))?;
            let bytes = decode_key(material).ok_or_else(|| {
                format!("line {n}: the key of \"{id}\" is not 32 bytes in hex (64 digits) or base64 (44 characters)")
            })?;
            if keys.iter().any(|k| k.id == id) {
                return Err(format!("line {n}: key id \"{id}\" appears twice"));
            }
            keys.push(Key { id: id.to_owned(), bytes });
        }
        if keys.is_empty() {
            return Err("holds no key (`litefleet keygen` prints one)".to_owned());
        }
        Ok(Keyring { keys, current: None })
    }

    /// Reads a keyring file ([`Keyring::parse`]); warns when other users may read it.
    pub fn read(path: &std::path::Path) -> Result<Keyring, String> {
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| format!("cannot read it: {e}"))?);
        #[cfg(unix)]
        if let Ok(meta) = std::fs::metadata(path) {
            use std::os::unix::fs::PermissionsExt;
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!("the keyring {} can be read by other users: chmod 600 it", path.display());
            }
        }
        Keyring::parse(&text)
    }

    /// Makes the key `id` the one new files are sealed with; `None` picks the only key,
    /// and is an error when there are several.
    pub fn seal_with(mut self, id: Option<&str>) -> Result<Keyring, String> {
        let index = match id {
            Some(id) => self
                .keys
                .iter()
                .position(|k| k.id == id)
                .ok_or_else(|| format!("key id \"{id}\" is not in the keyring (it holds {})", self.list()))?,
            None if self.keys.len() == 1 => 0,
            None => {
                return Err(format!(
                    "the keyring holds {} keys ({}): say which one encrypts new files with [encryption] key_id",
                    self.keys.len(),
                    self.list()
                ));
            }
        };
        self.current = Some(index);
        Ok(self)
    }

    /// The id of the key new files are sealed with, if any.
    pub fn current_id(&self) -> Option<&str> {
        self.current.map(|i| self.keys[i].id.as_str())
    }

    /// The ids of every key, in keyring order.
    pub fn ids(&self) -> Vec<&str> {
        self.keys.iter().map(|k| k.id.as_str()).collect()
    }

    /// Whether the keyring holds a key with this id.
    pub fn has(&self, id: &str) -> bool {
        self.get(id).is_some()
    }

    /// The ids, quoted, for messages.
    pub fn list(&self) -> String {
        self.ids().iter().map(|id| format!("\"{id}\"")).collect::<Vec<_>>().join(", ")
    }

    fn get(&self, id: &str) -> Option<&Key> {
        self.keys.iter().find(|k| k.id == id)
    }
}

/// Checks a key id: 1 to [`MAX_KEY_ID`] characters of `A-Z a-z 0-9 . _ -`.
pub fn check_key_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= MAX_KEY_ID
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok { Ok(()) } else { Err(format!("key id {id:?} must be 1 to {MAX_KEY_ID} characters of A-Z a-z 0-9 . _ -")) }
}

fn decode_key(s: &str) -> Option<Zeroizing<[u8; KEY_LEN]>> {
    let mut out = Zeroizing::new([0u8; KEY_LEN]);
    if s.len() == 2 * KEY_LEN && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        for (i, o) in out.iter_mut().enumerate() {
            *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
        }
        return Some(out);
    }
    let v = Zeroizing::new(base64_decode(s)?);
    (v.len() == KEY_LEN).then(|| {
        out.copy_from_slice(&v);
        out
    })
}

/// Standard or URL-safe base64, with or without padding.
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.trim_end_matches('=').bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

/// Which replica file an object is: bound into its key, so it opens only under its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Identity {
    pub level: u32,
    pub min_txid: u64,
    pub max_txid: u64,
}

impl Identity {
    fn bytes(&self) -> [u8; 20] {
        let mut b = [0u8; 20];
        b[..4].copy_from_slice(&self.level.to_be_bytes());
        b[4..12].copy_from_slice(&self.min_txid.to_be_bytes());
        b[12..].copy_from_slice(&self.max_txid.to_be_bytes());
        b
    }
}

/// Whether stored bytes begin like a sealed object.
pub fn is_sealed(prefix: &[u8]) -> bool {
    prefix.starts_with(&MAGIC)
}

/// Plaintext bytes chunk `i` holds at most.
fn capacity(i: u64) -> u64 {
    if i == 0 { FIRST } else { CHUNK }
}

/// Plaintext offset where chunk `i` starts.
fn plain_start(i: u64) -> u64 {
    if i == 0 { 0 } else { FIRST + (i - 1) * CHUNK }
}

/// The chunk holding plaintext offset `p`.
fn chunk_of(p: u64) -> u64 {
    if p < FIRST { 0 } else { 1 + (p - FIRST) / CHUNK }
}

/// Chunks of a plaintext of `len` bytes (at least one).
pub fn chunks(len: u64) -> u64 {
    if len == 0 { 1 } else { chunk_of(len - 1) + 1 }
}

/// Stored size of a plaintext of `len` bytes.
pub fn sealed_len(len: u64) -> u64 {
    HEADER_LEN as u64 + len + TAG * chunks(len)
}

/// The plaintext length of a sealed object of `stored` bytes, `None` when no plaintext
/// seals to that size (the object was cut or extended).
pub fn plain_len(stored: u64) -> Option<u64> {
    let body = stored.checked_sub(HEADER_LEN as u64)?;
    if body <= FIRST + TAG {
        return body.checked_sub(TAG);
    }
    let rest = body - FIRST - TAG;
    let (full, rem) = (rest / (CHUNK + TAG), rest % (CHUNK + TAG));
    let len = match rem {
        0 => FIRST + full * CHUNK,
        // A chunk after the first is never empty.
        r if r <= TAG => return None,
        r => FIRST + full * CHUNK + r - TAG,
    };
    (sealed_len(len) == stored).then_some(len)
}

/// Stored byte range of chunk `i` of a plaintext of `len` bytes.
fn chunk_range(len: u64, i: u64) -> Range<u64> {
    let start = HEADER_LEN as u64 + plain_start(i) + i * TAG;
    let plain = len.saturating_sub(plain_start(i)).min(capacity(i));
    start..start + plain + TAG
}

fn nonce(i: u64, last: bool) -> Nonce {
    let mut n = [0u8; 12];
    n[..8].copy_from_slice(&i.to_be_bytes());
    n[8..].copy_from_slice(&u32::from(last).to_be_bytes());
    Nonce::assume_unique_for_key(n)
}

struct Len(usize);

impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

/// The object key and key check of `key` for one object.
fn derive(key: &Key, salt: &[u8], id: Identity) -> Result<(LessSafeKey, [u8; 16]), Error> {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, salt).extract(&key.bytes[..]);
    let ident = id.bytes();
    let mut object_key = Zeroizing::new([0u8; KEY_LEN]);
    prk.expand(&[INFO_KEY, &ident], Len(KEY_LEN))
        .and_then(|okm| okm.fill(&mut object_key[..]))
        .map_err(|_| Error::Crypto)?;
    let mut check = [0u8; 16];
    prk.expand(&[INFO_CHECK, &ident], Len(16)).and_then(|okm| okm.fill(&mut check)).map_err(|_| Error::Crypto)?;
    let unbound = UnboundKey::new(&AES_256_GCM, &object_key[..]).map_err(|_| Error::Crypto)?;
    Ok((LessSafeKey::new(unbound), check))
}

/// Seals a file as it streams: [`Sealer::update`] with plaintext as it comes,
/// [`Sealer::finish`] at the end; both append stored bytes to `out`. A full chunk is
/// held back until more plaintext shows it is not the last.
pub struct Sealer {
    header: [u8; HEADER_LEN],
    key: LessSafeKey,
    /// The next chunk's index.
    index: u64,
    /// Plaintext of the next chunk, not sealed yet (at most its capacity).
    pending: Vec<u8>,
    header_out: bool,
}

impl Sealer {
    /// A sealer of the file `id` with the keyring's current key.
    pub fn new(keyring: &Keyring, id: Identity) -> Result<Sealer, Error> {
        let key = keyring.current.map(|i| &keyring.keys[i]).ok_or(Error::Crypto)?;
        let mut header = [0u8; HEADER_LEN];
        header[..4].copy_from_slice(&MAGIC);
        header[4] = VERSION;
        header[5] = CIPHER_AES_256_GCM;
        header[6] = FIRST_LOG2;
        header[7] = CHUNK_LOG2;
        header[8] = key.id.len() as u8;
        header[9..9 + key.id.len()].copy_from_slice(key.id.as_bytes());
        aws_lc_rs::rand::fill(&mut header[SALT]).map_err(|_| Error::Crypto)?;
        let (object_key, check) = derive(key, &header[SALT], id)?;
        header[CHECK].copy_from_slice(&check);
        Ok(Sealer { header, key: object_key, index: 0, pending: Vec::with_capacity(FIRST as usize), header_out: false })
    }

    fn seal_tail(&mut self, out: &mut Vec<u8>, at: usize, last: bool) -> Result<(), Error> {
        let tag = self
            .key
            .seal_in_place_separate_tag(nonce(self.index, last), Aad::from(&self.header), &mut out[at..])
            .map_err(|_| Error::Crypto)?;
        out.extend_from_slice(tag.as_ref());
        self.index += 1;
        Ok(())
    }

    /// Seals what of `plain` completes chunks, appending them (and, the first time, the
    /// header) to `out`.
    pub fn update(&mut self, mut plain: &[u8], out: &mut Vec<u8>) -> Result<(), Error> {
        if !self.header_out {
            out.extend_from_slice(&self.header);
            self.header_out = true;
        }
        loop {
            let cap = capacity(self.index) as usize;
            if self.pending.len() + plain.len() <= cap {
                self.pending.extend_from_slice(plain);
                return Ok(());
            }
            // More plaintext follows this chunk: it is not the last.
            let take = cap - self.pending.len();
            let at = out.len();
            out.reserve(cap + TAG as usize);
            out.extend_from_slice(&self.pending);
            out.extend_from_slice(&plain[..take]);
            self.pending.clear();
            plain = &plain[take..];
            self.seal_tail(out, at, false)?;
        }
    }

    /// Seals the last chunk.
    pub fn finish(mut self, out: &mut Vec<u8>) -> Result<(), Error> {
        self.update(&[], out)?;
        let at = out.len();
        out.extend_from_slice(&self.pending);
        self.seal_tail(out, at, true)
    }
}

/// Seals `plain` for the file `id` with the keyring's current key.
pub fn seal(keyring: &Keyring, id: Identity, plain: &[u8]) -> Result<Vec<u8>, Error> {
    let mut out = Vec::with_capacity(sealed_len(plain.len() as u64) as usize);
    let mut s = Sealer::new(keyring, id)?;
    s.update(plain, &mut out)?;
    s.finish(&mut out)?;
    Ok(out)
}

/// A parsed, checked envelope header and the key that opens the object's chunks.
pub struct Opener {
    header: [u8; HEADER_LEN],
    key: LessSafeKey,
    len: u64,
}

impl Opener {
    /// Reads a header (the first [`HEADER_LEN`] bytes of a sealed object of `stored_len`
    /// bytes) for the file `id`, finds its key in `keyring` and checks that it is the
    /// right one.
    pub fn new(keyring: Option<&Keyring>, id: Identity, stored: &[u8], stored_len: u64) -> Result<Opener, Error> {
        let key_id = key_id(stored)?;
        let h: [u8; HEADER_LEN] = stored[..HEADER_LEN].try_into().map_err(|_| Error::Header("short".into()))?;
        if h[4] != VERSION {
            return Err(Error::Header(format!("format version {} (this litefleet reads {VERSION})", h[4])));
        }
        if (h[5], h[6], h[7]) != (CIPHER_AES_256_GCM, FIRST_LOG2, CHUNK_LOG2) {
            return Err(Error::Header(format!(
                "cipher {} with chunks of 2^{}/2^{} bytes is not format 1",
                h[5], h[6], h[7]
            )));
        }
        let Some(keyring) = keyring else { return Err(Error::NoKeys { key_id }) };
        let Some(key) = keyring.get(&key_id) else {
            return Err(Error::UnknownKey { key_id, known: keyring.list() });
        };
        let (object_key, check) = derive(key, &h[SALT], id)?;
        // Not secret: a mismatch only says the key is another one.
        if check[..] != h[CHECK] {
            return Err(Error::WrongKey { key_id });
        }
        let len = plain_len(stored_len).ok_or(Error::Length { got: stored_len })?;
        Ok(Opener { header: h, key: object_key, len })
    }

    /// The header this opener was made from (the object's first bytes).
    pub fn header(&self) -> &[u8; HEADER_LEN] {
        &self.header
    }

    /// The plaintext length.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the plaintext is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Chunks of the object.
    pub fn chunks(&self) -> u64 {
        chunks(self.len)
    }

    /// The stored range holding the chunks that cover plaintext `range` (clamped to
    /// the plaintext), and the index of its first chunk.
    pub fn stored_range(&self, range: &Range<u64>) -> (Range<u64>, u64) {
        let end = range.end.min(self.len);
        let first = chunk_of(range.start.min(end)).min(self.chunks() - 1);
        let last = if end == 0 { 0 } else { chunk_of(end - 1) }.max(first);
        (chunk_range(self.len, first).start..chunk_range(self.len, last).end, first)
    }

    /// Plaintext offset where chunk `i` starts.
    pub fn plain_start(&self, i: u64) -> u64 {
        plain_start(i)
    }

    /// Stored bytes of chunk `i`.
    pub fn chunk_stored_len(&self, i: u64) -> u64 {
        let r = chunk_range(self.len, i);
        r.end - r.start
    }

    /// Opens whole chunks in place, starting with chunk `first` (`data` holds their
    /// stored bytes back to back), and returns where each one's plaintext lies in
    /// `data`. Callers hand whole chunks only: a partial one is an error.
    pub fn open_chunks_in_place(&self, first: u64, data: &mut [u8]) -> Result<Vec<Range<usize>>, Error> {
        let total = self.chunks();
        let (mut at, mut i, mut out) = (0usize, first, Vec::new());
        while at < data.len() {
            if i >= total {
                return Err(Error::Length { got: sealed_len(self.len) + (data.len() - at) as u64 });
            }
            let n = self.chunk_stored_len(i) as usize;
            if at + n > data.len() {
                return Err(Error::Cut { chunk: i });
            }
            let opened = self
                .key
                .open_in_place(nonce(i, i + 1 == total), Aad::from(&self.header), &mut data[at..at + n])
                .map_err(|_| Error::Tampered { chunk: i })?;
            out.push(at..at + opened.len());
            at += n;
            i += 1;
        }
        Ok(out)
    }

    /// Opens whole chunks in place, starting with chunk `first`: `data` holds their
    /// stored bytes back to back; on return its first bytes are the plaintext, whose
    /// length is returned. Callers hand whole chunks only: a partial one is an error.
    pub fn open_chunks(&self, first: u64, data: &mut [u8]) -> Result<usize, Error> {
        let mut plain = 0;
        for r in self.open_chunks_in_place(first, data)? {
            let n = r.len();
            data.copy_within(r, plain);
            plain += n;
        }
        Ok(plain)
    }
}

/// The key id of a sealed object's header.
pub fn key_id(stored: &[u8]) -> Result<String, Error> {
    if !is_sealed(stored) {
        return Err(Error::Header("it does not start with LFE1".into()));
    }
    if stored.len() < HEADER_LEN {
        return Err(Error::Header(format!("shorter than its {HEADER_LEN}-byte header")));
    }
    let n = stored[8] as usize;
    if n == 0 || n > MAX_KEY_ID {
        return Err(Error::Header(format!("key id length {n}")));
    }
    let id = String::from_utf8(stored[9..9 + n].to_vec()).map_err(|_| Error::Header("key id is not UTF-8".into()))?;
    check_key_id(&id).map_err(Error::Header)?;
    Ok(id)
}

/// Opens a whole sealed object (`stored` begins with [`MAGIC`]) in place.
pub fn open(keyring: Option<&Keyring>, id: Identity, mut stored: Vec<u8>) -> Result<Vec<u8>, Error> {
    let opener = Opener::new(keyring, id, &stored, stored.len() as u64)?;
    let n = opener.open_chunks(0, &mut stored[HEADER_LEN..])?;
    stored.drain(..HEADER_LEN);
    stored.truncate(n);
    Ok(stored)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(text: &str, current: Option<&str>) -> Keyring {
        Keyring::parse(text).and_then(|k| k.seal_with(current)).unwrap_or_else(|e| panic!("{e}"))
    }

    const K1: &str = "k1 000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    const K2: &str = "k2 AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    const ID: Identity = Identity { level: 0, min_txid: 7, max_txid: 7 };

    fn plain(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 31 % 251) as u8).collect()
    }

    #[test]
    fn round_trips_at_every_chunk_boundary_and_sizes_invert() {
        let k = ring(K1, None);
        let f = FIRST as usize;
        let c = CHUNK as usize;
        for n in [0, 1, 100, f - 1, f, f + 1, f + c - 1, f + c, f + c + 1, f + 3 * c, 200_000] {
            let p = plain(n);
            let s = seal(&k, ID, &p).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(s.len() as u64, sealed_len(n as u64), "size of {n}");
            assert_eq!(plain_len(s.len() as u64), Some(n as u64), "length back from size {}", s.len());
            assert_eq!(&s[..4], b"LFE1");
            // Streamed in odd pieces: the same layout.
            let mut streamed = Vec::new();
            let mut sealer = Sealer::new(&k, ID).unwrap_or_else(|e| panic!("{e}"));
            for piece in p.chunks(7777) {
                sealer.update(piece, &mut streamed).unwrap_or_else(|e| panic!("{e}"));
            }
            sealer.finish(&mut streamed).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(streamed.len(), s.len());
            assert_eq!(open(Some(&k), ID, s).unwrap_or_else(|e| panic!("{n}: {e}")), p);
            assert_eq!(open(Some(&k), ID, streamed).unwrap_or_else(|e| panic!("{n}: {e}")), p);
        }
        // No plaintext seals to these sizes.
        for bad in [0, 87, 103, sealed_len(FIRST) + 1, sealed_len(FIRST) + TAG] {
            assert_eq!(plain_len(bad), None, "{bad}");
        }
    }

    #[test]
    fn rotation_wrong_missing_and_tampered_keys_are_told_apart() {
        let both = format!("{K1}\n# the new one\n{K2}\n");
        let old = ring(K1, None);
        let new = ring(&both, Some("k2"));
        const N: u64 = 200_000;
        let s1 = seal(&old, ID, &plain(N as usize)).unwrap_or_else(|e| panic!("{e}"));
        let s2 = seal(&new, ID, &plain(N as usize)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(key_id(&s2).unwrap_or_default(), "k2");
        assert!(open(Some(&new), ID, s1.clone()).is_ok());
        let e = open(Some(&old), ID, s2.clone()).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("\"k2\", which is not in the keyring") && e.contains("\"k1\""), "{e}");
        let e = open(None, ID, s2.clone()).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("no encryption keys are configured"), "{e}");
        let impostor = ring("k2 ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff", None);
        assert!(matches!(open(Some(&impostor), ID, s2.clone()), Err(Error::WrongKey { .. })));
        // Copied to another file's name: it does not open there.
        let other = Identity { level: 1, ..ID };
        assert!(matches!(open(Some(&new), other, s2.clone()), Err(Error::WrongKey { .. })));
        let mut flipped = s2.clone();
        flipped[HEADER_LEN + 2000] ^= 1;
        assert_eq!(open(Some(&new), ID, flipped).err(), Some(Error::Tampered { chunk: 1 }));
        // Cut anywhere, at a chunk boundary included.
        for cut in [1, TAG as usize, (s2.len() - HEADER_LEN - FIRST as usize - TAG as usize) / 2] {
            let mut torn = s2.clone();
            torn.truncate(torn.len() - cut);
            let e = open(Some(&new), ID, torn).err();
            assert!(e.as_ref().is_some_and(Error::is_damage), "cut {cut}: {e:?}");
        }
        let boundary = chunk_range(N, 0).end as usize;
        let mut torn = s2.clone();
        torn.truncate(boundary);
        assert_eq!(open(Some(&new), ID, torn).err(), Some(Error::Tampered { chunk: 0 }));
        // Chunks 1 and 2 swapped (same size): chunk 1's nonce does not open chunk 2.
        let (r1, r2) =
            (chunk_range(100_000, 1), chunk_range(100_000, 1).end..chunk_range(100_000, 1).end + CHUNK + TAG);
        let mut swapped = s2.clone();
        let (a, b) = (s2[r1.start as usize..r1.end as usize].to_vec(), s2[r2.start as usize..r2.end as usize].to_vec());
        if r2.end as usize <= s2.len() && a.len() == b.len() {
            swapped[r1.start as usize..r1.end as usize].copy_from_slice(&b);
            swapped[r2.start as usize..r2.end as usize].copy_from_slice(&a);
            assert!(matches!(open(Some(&new), ID, swapped), Err(Error::Tampered { .. })));
        }
        // A chunk from another object (same key, same place): another salt, another key.
        let s3 = seal(&new, ID, &plain(N as usize)).unwrap_or_else(|e| panic!("{e}"));
        let mut mixed = s2.clone();
        mixed[r1.start as usize..r1.end as usize].copy_from_slice(&s3[r1.start as usize..r1.end as usize]);
        assert_eq!(open(Some(&new), ID, mixed).err(), Some(Error::Tampered { chunk: 1 }));
        let mut header = s2;
        header[50] ^= 1; // the salt: the key check fails
        assert!(matches!(open(Some(&new), ID, header), Err(Error::WrongKey { .. })));
    }

    #[test]
    fn keyring_errors_name_the_line_and_never_the_key() {
        let e = Keyring::parse("k1 00\n").err().unwrap_or_default();
        assert!(e.starts_with("line 1:") && !e.contains(" 00"), "{e}");
        let e = Keyring::parse(&format!("{K1}\n{K1}\n")).err().unwrap_or_default();
        assert!(e.contains("line 2") && e.contains("twice") && !e.contains("0001"), "{e}");
        let e = Keyring::parse(&format!("{K1}\n{K2}")).and_then(|k| k.seal_with(None)).err().unwrap_or_default();
        assert!(e.contains("key_id"), "{e}");
        assert!(Keyring::parse("# nothing\n").is_err());
        let k = Key::generate("2026-01").unwrap_or_else(|e| panic!("{e}"));
        let line = k.keyring_line();
        assert_eq!(Keyring::parse(&line).map(|r| r.ids().join(",")).unwrap_or_default(), "2026-01");
        assert!(!format!("{k:?}").contains(&line[8..]));
    }
}
