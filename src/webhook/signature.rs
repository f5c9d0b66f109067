//! `X-Hub-Signature-256`: HMAC-SHA256 of the exact raw body, compared in constant time.

use hmac::{Hmac, Mac};
use sha2::Sha256;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error("missing X-Hub-Signature-256 header")]
    Missing,
    #[error("X-Hub-Signature-256 is not of the form sha256=<64 hex digits>")]
    Malformed,
    #[error("X-Hub-Signature-256 does not match the body")]
    Mismatch,
}

/// A well-formed `X-Hub-Signature-256` value, not yet checked against a body: a request
/// without one is refused before its body is read.
#[derive(Debug, Clone, Copy)]
pub struct Signature([u8; 32]);

impl Signature {
    pub fn parse(header: Option<&str>) -> Result<Self, SignatureError> {
        let header = header.ok_or(SignatureError::Missing)?;
        let hex_digest = header
            .strip_prefix("sha256=")
            .ok_or(SignatureError::Malformed)?;
        let mut digest = [0; 32];
        hex::decode_to_slice(hex_digest, &mut digest).map_err(|_| SignatureError::Malformed)?;
        Ok(Self(digest))
    }

    /// Checks the signature against `body`; once it matches, its digest is the body's
    /// HMAC-SHA256, a key for the exact bytes GitHub signed.
    pub fn verify(self, secret: &[u8], body: &[u8]) -> Result<[u8; 32], SignatureError> {
        let mut mac = mac(secret);
        mac.update(body);
        mac.verify_slice(&self.0)
            .map_err(|_| SignatureError::Mismatch)?;
        Ok(self.0)
    }
}

/// The header value GitHub would send for `body`.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = mac(secret);
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn mac(secret: &[u8]) -> Hmac<Sha256> {
    Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts keys of any length")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"It's a Secret to Everybody";
    const BODY: &[u8] = b"Hello, World!";
    const GITHUB_VECTOR: &str =
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

    fn verify(secret: &[u8], body: &[u8], header: Option<&str>) -> Result<(), SignatureError> {
        Signature::parse(header)?.verify(secret, body).map(drop)
    }

    #[test]
    fn matches_githubs_documented_test_vector() {
        assert_eq!(sign(SECRET, BODY), GITHUB_VECTOR);
        assert_eq!(verify(SECRET, BODY, Some(GITHUB_VECTOR)), Ok(()));
    }

    #[test]
    fn refuses_missing_malformed_and_wrong_signatures() {
        assert_eq!(verify(SECRET, BODY, None), Err(SignatureError::Missing));
        assert_eq!(
            verify(SECRET, BODY, Some("sha1=0123")),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify(SECRET, BODY, Some("sha256=zz")),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify(SECRET, BODY, Some("sha256=00")),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify(SECRET, BODY, Some(&format!("{GITHUB_VECTOR}00"))),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify(b"another secret", BODY, Some(GITHUB_VECTOR)),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(SECRET, b"Hello, World?", Some(GITHUB_VECTOR)),
            Err(SignatureError::Mismatch)
        );
    }
}
