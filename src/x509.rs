//! Just enough X.509 to read a certificate's validity period (for `loopsy doctor`): a DER walk
//! to `tbsCertificate.validity`. No signature checks, no extensions: trust is by pinning
//! (`tls.rs`), this only says when a certificate expires.

/// Validity period in Unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    pub not_before: i64,
    pub not_after: i64,
}

/// Reads the validity period of a DER certificate.
pub(crate) fn validity(der: &[u8]) -> Result<Validity, String> {
    let (certificate, _) = expect(der, 0x30, "certificate")?;
    let (tbs, _) = expect(certificate, 0x30, "tbsCertificate")?;
    let mut rest = tbs;
    if rest.first() == Some(&0xA0) {
        rest = tlv(rest)?.2; // explicit version
    }
    for field in ["serialNumber", "signature", "issuer"] {
        rest = tlv(rest).map_err(|e| format!("{field}: {e}"))?.2;
    }
    let (validity, _) = expect(rest, 0x30, "validity")?;
    let (tag, before, rest) = tlv(validity)?;
    let not_before = time(tag, before)?;
    let (tag, after, _) = tlv(rest)?;
    Ok(Validity { not_before, not_after: time(tag, after)? })
}

/// One tag-length-value: (tag, content, what follows).
fn tlv(input: &[u8]) -> Result<(u8, &[u8], &[u8]), String> {
    let (&tag, rest) = input.split_first().ok_or("truncated: no tag")?;
    let (&first, mut rest) = rest.split_first().ok_or("truncated: no length")?;
    let length = if first < 0x80 {
        first as usize
    } else {
        let count = (first & 0x7F) as usize;
        if count == 0 || count > 4 || rest.len() < count {
            return Err("unsupported length".into());
        }
        let length = rest[..count].iter().fold(0usize, |acc, b| (acc << 8) | *b as usize);
        rest = &rest[count..];
        length
    };
    if rest.len() < length {
        return Err("truncated content".into());
    }
    Ok((tag, &rest[..length], &rest[length..]))
}

fn expect<'a>(input: &'a [u8], tag: u8, what: &str) -> Result<(&'a [u8], &'a [u8]), String> {
    let (found, content, rest) = tlv(input).map_err(|e| format!("{what}: {e}"))?;
    if found != tag {
        return Err(format!("{what}: expected tag {tag:#04x}, found {found:#04x}"));
    }
    Ok((content, rest))
}

/// UTCTime (`YYMMDDHHMMSSZ`) or GeneralizedTime (`YYYYMMDDHHMMSSZ`) to Unix seconds.
fn time(tag: u8, content: &[u8]) -> Result<i64, String> {
    let text = std::str::from_utf8(content).map_err(|_| "time is not ASCII")?;
    let digits = text.strip_suffix('Z').ok_or("time is not UTC")?;
    let (year, rest) = match (tag, digits.len()) {
        (0x17, 12) => {
            let yy: i64 = number(&digits[..2])?;
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, &digits[2..])
        }
        (0x18, 14) => (number(&digits[..4])?, &digits[4..]),
        _ => return Err(format!("unsupported time '{text}'")),
    };
    let field = |i: usize| number(&rest[i..i + 2]);
    let (month, day, hour, minute, second) = (field(0)?, field(2)?, field(4)?, field(6)?, field(8)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return Err(format!("invalid time '{text}'"));
    }
    Ok(days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second)
}

fn number(text: &str) -> Result<i64, String> {
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("'{text}' is not a number"));
    }
    text.parse().map_err(|_| format!("'{text}' is not a number"))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_validity_of_an_rcgen_certificate_is_read() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["x".into()]).unwrap();
        params.not_before = rcgen::date_time_ymd(1999, 12, 31);
        params.not_after = rcgen::date_time_ymd(2030, 1, 2);
        let cert = params.self_signed(&key).unwrap();
        let validity = validity(cert.der()).unwrap();
        assert_eq!(validity.not_after, 1_893_542_400);
        assert_eq!(validity.not_before, 946_598_400);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bad in [&[][..], &[0x30], &[0x30, 0x05, 0x30], &[0x30, 0x84, 0xff, 0xff, 0xff, 0xff], b"hello"] {
            assert!(validity(bad).is_err());
        }
        assert_eq!(time(0x18, b"20500101000000Z"), Ok(days_from_civil(2050, 1, 1) * 86_400));
        assert!(time(0x17, b"991301000000Z").is_err());
    }
}
