//! A certificate's subject and issuer as nginx's `$ssl_client_s_dn` and
//! `$ssl_client_i_dn` show them: RFC 2253, as OpenSSL prints it
//! (`XN_FLAG_RFC2253`): the last RDN first, `,` between RDNs, `+` inside
//! one, OpenSSL's short names, and every byte outside printable ASCII as
//! `\XX`. `auth-tls-match-cn` regexes are written against this text.
//!
//! The certificate is the client's: every length is checked, nothing
//! panics, and a name that cannot be read is `None`.

/// (tag, contents, rest) of one DER element.
pub fn der_element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *input.first()?;
    let first = *input.get(1)?;
    let (len, header) = if first < 0x80 {
        (usize::from(first), 2)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let len = input
            .get(2..2 + n)?
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, 2 + n)
    };
    let end = header.checked_add(len)?;
    let body = input.get(header..end)?;
    Some((tag, body, &input[end..]))
}

/// The fields of a certificate's `tbsCertificate`, from its DER, without the
/// optional `[0]` version: serial, signature, issuer, validity, subject.
pub fn tbs_fields(cert: &[u8]) -> Option<Vec<&[u8]>> {
    let (_, cert_body, _) = der_element(cert)?;
    let (_, mut tbs, _) = der_element(cert_body)?;
    let mut fields = Vec::new();
    while !tbs.is_empty() && fields.len() < 6 {
        let (tag, body, rest) = der_element(tbs)?;
        if !(fields.is_empty() && tag == 0xa0) {
            fields.push(body);
        }
        tbs = rest;
    }
    Some(fields)
}

/// (subject, issuer) of a certificate, in RFC 2253 form.
pub fn subject_and_issuer(cert: &[u8]) -> Option<(String, String)> {
    let fields = tbs_fields(cert)?;
    Some((rfc2253(fields.get(4)?)?, rfc2253(fields.get(2)?)?))
}

/// The contents of a `Name` (a SEQUENCE of SETs of `AttributeTypeAndValue`).
pub fn rfc2253(mut name: &[u8]) -> Option<String> {
    let mut rdns = Vec::new();
    while !name.is_empty() {
        let (tag, mut set, rest) = der_element(name)?;
        if tag != 0x31 {
            return None;
        }
        let mut attributes = Vec::new();
        while !set.is_empty() {
            let (tag, pair, after) = der_element(set)?;
            let (oid_tag, oid, value) = der_element(pair).filter(|_| tag == 0x30)?;
            if oid_tag != 0x06 {
                return None;
            }
            attributes.push(format!("{}={}", short_name(oid), value_text(value)?));
            set = after;
        }
        rdns.push(attributes.join("+"));
        name = rest;
    }
    rdns.reverse();
    Some(rdns.join(","))
}

/// OpenSSL's short name of an attribute type, else its dotted OID.
fn short_name(oid: &[u8]) -> String {
    let known: &[(&[u8], &str)] = &[
        (&[0x55, 0x04, 0x03], "CN"),
        (&[0x55, 0x04, 0x04], "SN"),
        (&[0x55, 0x04, 0x05], "serialNumber"),
        (&[0x55, 0x04, 0x06], "C"),
        (&[0x55, 0x04, 0x07], "L"),
        (&[0x55, 0x04, 0x08], "ST"),
        (&[0x55, 0x04, 0x09], "street"),
        (&[0x55, 0x04, 0x0a], "O"),
        (&[0x55, 0x04, 0x0b], "OU"),
        (&[0x55, 0x04, 0x0c], "title"),
        (&[0x55, 0x04, 0x2a], "GN"),
        (&[0x55, 0x04, 0x2b], "initials"),
        (&[0x55, 0x04, 0x2e], "dnQualifier"),
        (
            &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x01],
            "emailAddress",
        ),
        (
            &[0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x19],
            "DC",
        ),
        (
            &[0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x01],
            "UID",
        ),
    ];
    if let Some((_, name)) = known.iter().find(|(k, _)| *k == oid) {
        return (*name).to_owned();
    }
    dotted(oid)
}

fn dotted(oid: &[u8]) -> String {
    let mut arcs: Vec<u64> = Vec::new();
    let mut current: u64 = 0;
    for byte in oid {
        current = current.saturating_mul(128) | u64::from(byte & 0x7f);
        if byte & 0x80 == 0 {
            arcs.push(current);
            current = 0;
        }
    }
    let Some(first) = arcs.first().copied() else {
        return String::new();
    };
    let (a, b) = match first {
        0..=39 => (0, first),
        40..=79 => (1, first - 40),
        _ => (2, first - 80),
    };
    let mut text = format!("{a}.{b}");
    for arc in &arcs[1..] {
        text.push_str(&format!(".{arc}"));
    }
    text
}

/// A value as OpenSSL's `ASN1_STRFLGS_RFC2253` prints it: strings as UTF-8
/// with RFC 2253's escapes and `\XX` for control and non-ASCII bytes; any
/// other type as `#` and the hex of its DER.
fn value_text(element: &[u8]) -> Option<String> {
    let (tag, body, _) = der_element(element)?;
    let text: String = match tag {
        // UTF8String, PrintableString, IA5String, NumericString, VisibleString.
        0x0c | 0x13 | 0x16 | 0x12 | 0x1a => String::from_utf8_lossy(body).into_owned(),
        // TeletexString: read as Latin-1, as OpenSSL does.
        0x14 => body.iter().map(|b| char::from(*b)).collect(),
        // BMPString (UCS-2) and UniversalString (UCS-4).
        0x1e => char::decode_utf16(
            body.chunks(2)
                .map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])),
        )
        .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
        .collect(),
        0x1c => body
            .chunks(4)
            .map(|c| {
                let mut word = [0u8; 4];
                word[..c.len()].copy_from_slice(c);
                char::from_u32(u32::from_be_bytes(word)).unwrap_or(char::REPLACEMENT_CHARACTER)
            })
            .collect(),
        _ => {
            let der = &element[..element.len() - der_element(element)?.2.len()];
            return Some(format!("#{}", hex(der)));
        }
    };
    Some(escape(&text))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let last = text.len().saturating_sub(1);
    for (i, c) in text.char_indices() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && matches!(c, '#' | ' '))
            || (i == last && c == ' ');
        if special {
            out.push('\\');
            out.push(c);
        } else if c.is_ascii_graphic() || c == ' ' {
            out.push(c);
        } else {
            let mut utf8 = [0u8; 4];
            for byte in c.encode_utf8(&mut utf8).bytes() {
                out.push_str(&format!("\\{byte:02X}"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(dn: &[(rcgen::DnType, &str)]) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        for (kind, value) in dn {
            params.distinguished_name.push(kind.clone(), *value);
        }
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn names_read_as_openssl_prints_them() {
        use rcgen::DnType;
        let der = cert(&[
            (DnType::CountryName, "US"),
            (DnType::OrganizationName, "Acme, Inc."),
            (DnType::CommonName, "alice"),
        ]);
        let (subject, issuer) = subject_and_issuer(&der).unwrap();
        assert_eq!(subject, "CN=alice,O=Acme\\, Inc.,C=US");
        assert_eq!(issuer, subject, "self-signed");
        let der = cert(&[(DnType::CommonName, " #é<")]);
        assert_eq!(subject_and_issuer(&der).unwrap().0, "CN=\\ #\\C3\\A9\\<");
        let der = cert(&[(DnType::CustomDnType(vec![1, 3, 6, 1, 4, 1, 99]), "x")]);
        assert_eq!(subject_and_issuer(&der).unwrap().0, "1.3.6.1.4.1.99=x");
    }

    /// The client's certificate is hostile input: never a panic.
    #[test]
    fn fuzzed_certificates_never_panic() {
        let der = cert(&[(rcgen::DnType::CommonName, "alice")]);
        crate::fuzz::bytes(&[&der], crate::fuzz::iterations(20_000), |raw| {
            let _ = subject_and_issuer(raw);
        });
    }
}
