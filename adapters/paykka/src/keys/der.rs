//! A minimal DER reader/writer for the few ASN.1 structures an RSA key comes in
//! (PKCS#8 `PrivateKeyInfo`, PKCS#1 `RSAPrivateKey`/`RSAPublicKey`, X.509
//! `SubjectPublicKeyInfo`).
//!
//! Why hand-rolled: it lets us sniff the structure and the algorithm OID
//! *before* handing bytes to a crypto backend, so errors can say exactly what
//! was wrong ("this is an EC key", "this is a public key", "1024-bit key")
//! identically for both backends, and it keeps key parsing independent of
//! which backend features are compiled in. Only definite-length DER is
//! accepted; anything else is reported as malformed.

pub(crate) const TAG_INTEGER: u8 = 0x02;
pub(crate) const TAG_BIT_STRING: u8 = 0x03;
pub(crate) const TAG_OCTET_STRING: u8 = 0x04;
pub(crate) const TAG_NULL: u8 = 0x05;
pub(crate) const TAG_OID: u8 = 0x06;
pub(crate) const TAG_SEQUENCE: u8 = 0x30;

/// OID 1.2.840.113549.1.1.1 (rsaEncryption), content bytes only.
pub(crate) const OID_RSA_ENCRYPTION: &[u8] =
    &[0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x01];

/// A cursor over DER bytes that reads one TLV at a time.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

/// A DER structure problem; the text is what the caller reports.
pub(crate) type DerError = &'static str;

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Tag of the next element, without consuming it.
    pub(crate) fn peek_tag(&self) -> Option<u8> {
        self.buf.first().copied()
    }

    /// Reads one element and returns `(tag, content)`.
    pub(crate) fn read_any(&mut self) -> Result<(u8, &'a [u8]), DerError> {
        let (&tag, rest) = self.buf.split_first().ok_or("unexpected end of data")?;
        let (&first_len, mut rest) = rest.split_first().ok_or("truncated length")?;
        let len = if first_len < 0x80 {
            usize::from(first_len)
        } else {
            let n = usize::from(first_len & 0x7F);
            if n == 0 {
                return Err("indefinite length is not DER");
            }
            if n > 4 || rest.len() < n {
                return Err("invalid length");
            }
            let mut len = 0usize;
            for &b in &rest[..n] {
                len = (len << 8) | usize::from(b);
            }
            rest = &rest[n..];
            len
        };
        if rest.len() < len {
            return Err("element runs past the end of the data");
        }
        let (content, after) = rest.split_at(len);
        self.buf = after;
        Ok((tag, content))
    }

    /// Reads one element that must carry `tag`.
    pub(crate) fn read(&mut self, tag: u8, what: DerError) -> Result<&'a [u8], DerError> {
        match self.read_any()? {
            (t, content) if t == tag => Ok(content),
            _ => Err(what),
        }
    }
}

/// Bit length of a non-negative DER INTEGER's content (leading zero octets ignored).
pub(crate) fn integer_bits(content: &[u8]) -> usize {
    let trimmed = strip_leading_zeros(content);
    match trimmed.first() {
        None => 0,
        Some(&first) => (trimmed.len() - 1) * 8 + (8 - first.leading_zeros() as usize),
    }
}

fn strip_leading_zeros(content: &[u8]) -> &[u8] {
    let start = content
        .iter()
        .position(|&b| b != 0)
        .unwrap_or(content.len());
    &content[start..]
}

/// Dotted text of an OID's content bytes, for error messages.
pub(crate) fn oid_to_string(content: &[u8]) -> String {
    let mut arcs: Vec<u64> = Vec::new();
    let mut acc: u64 = 0;
    for &b in content {
        acc = (acc << 7) | u64::from(b & 0x7F);
        if b & 0x80 == 0 {
            if arcs.is_empty() {
                let (first, second) = match acc {
                    0..=39 => (0, acc),
                    40..=79 => (1, acc - 40),
                    _ => (2, acc - 80),
                };
                arcs.push(first);
                arcs.push(second);
            } else {
                arcs.push(acc);
            }
            acc = 0;
        }
    }
    arcs.iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(".")
}

/// Human name of a well-known key algorithm OID (content bytes).
pub(crate) fn algorithm_name(oid: &[u8]) -> String {
    match oid {
        OID_RSA_ENCRYPTION => "RSA".to_owned(),
        [0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x0A] => "RSASSA-PSS".to_owned(),
        [0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x02, 0x01] => "EC".to_owned(),
        [0x2A, 0x86, 0x48, 0xCE, 0x38, 0x04, 0x01] => "DSA".to_owned(),
        [0x2B, 0x65, 0x70] => "Ed25519".to_owned(),
        [0x2B, 0x65, 0x71] => "Ed448".to_owned(),
        [0x2B, 0x65, 0x6E] => "X25519".to_owned(),
        [0x2B, 0x65, 0x6F] => "X448".to_owned(),
        other => format!("unknown algorithm OID {}", oid_to_string(other)),
    }
}

/// Appends a DER TLV.
pub(crate) fn write_tlv(out: &mut Vec<u8>, tag: u8, content: &[u8]) {
    out.push(tag);
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes
            .iter()
            .position(|&b| b != 0)
            .unwrap_or(bytes.len() - 1);
        let significant = &bytes[skip..];
        out.push(0x80 | significant.len() as u8);
        out.extend_from_slice(significant);
    }
    out.extend_from_slice(content);
}

/// Writes a non-negative INTEGER from big-endian magnitude bytes (minimal encoding).
pub(crate) fn write_unsigned_integer(out: &mut Vec<u8>, magnitude: &[u8]) {
    let trimmed = strip_leading_zeros(magnitude);
    let mut content = Vec::with_capacity(trimmed.len() + 1);
    if trimmed.first().is_none_or(|&b| b & 0x80 != 0) {
        content.push(0);
    }
    content.extend_from_slice(trimmed);
    write_tlv(out, TAG_INTEGER, &content);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oid_text() {
        assert_eq!(oid_to_string(OID_RSA_ENCRYPTION), "1.2.840.113549.1.1.1");
        assert_eq!(algorithm_name(&[0x2B, 0x65, 0x70]), "Ed25519");
        assert_eq!(algorithm_name(&[0x2A, 0x03]), "unknown algorithm OID 1.2.3");
    }

    #[test]
    fn integer_roundtrip_and_bits() {
        let mut out = Vec::new();
        write_unsigned_integer(&mut out, &[0x00, 0x80, 0x01]);
        assert_eq!(out, vec![0x02, 0x03, 0x00, 0x80, 0x01]);
        let mut r = Reader::new(&out);
        let content = r.read(TAG_INTEGER, "int").unwrap();
        assert_eq!(integer_bits(content), 16);
        assert!(r.is_empty());
    }

    #[test]
    fn long_lengths() {
        let content = vec![7u8; 300];
        let mut out = Vec::new();
        write_tlv(&mut out, TAG_OCTET_STRING, &content);
        assert_eq!(&out[..4], &[0x04, 0x82, 0x01, 0x2C]);
        let mut r = Reader::new(&out);
        assert_eq!(r.read(TAG_OCTET_STRING, "os").unwrap(), &content[..]);
    }

    #[test]
    fn rejects_truncation_and_indefinite() {
        assert!(Reader::new(&[0x30, 0x05, 0x01]).read_any().is_err());
        assert!(Reader::new(&[0x30, 0x80, 0x00, 0x00]).read_any().is_err());
        assert!(Reader::new(&[]).read_any().is_err());
    }
}
