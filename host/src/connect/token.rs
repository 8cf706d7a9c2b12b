//! Bearer tokens, checked one way for every listener that takes them: HTTP ingest,
//! tables, the fleet's device routes and the API's admin routes. A token in a config is
//! read straight into a [`BearerToken`], which refuses an empty one at config load (an
//! unset `${VAR:-}` must not become a token that anyone can present). A token the host
//! presents to a server it calls (the `http` sink's) is a [`ClientToken`], refused empty
//! the same way.

use axum::http::{HeaderMap, HeaderValue, header};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// An expected token, kept as its SHA-256 so that checking a presented one takes the
/// same time whatever it is: comparing digests in constant time leaks neither how many
/// leading bytes matched nor the token's length.
#[derive(Clone)]
pub struct BearerToken([u8; 32]);

impl BearerToken {
    pub fn new(token: &str) -> BearerToken {
        BearerToken(Sha256::digest(token.as_bytes()).into())
    }

    /// The token as its SHA-256, for a table's access list (`tables` sits below this layer).
    pub fn digest(&self) -> [u8; 32] {
        self.0
    }

    pub fn from_digest(digest: [u8; 32]) -> BearerToken {
        BearerToken(digest)
    }

    /// Whether `presented` (the token of an `Authorization: Bearer` header) is this one.
    pub fn matches(&self, presented: &Presented) -> bool {
        bool::from(presented.0.ct_eq(&self.0))
    }
}

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerToken(..)")
    }
}

impl<'de> serde::Deserialize<'de> for BearerToken {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let token = non_empty(String::deserialize(deserializer)?)?;
        Ok(BearerToken::new(&token))
    }
}

/// `token`, unless it is empty.
fn non_empty<E: serde::de::Error>(token: String) -> Result<String, E> {
    if token.is_empty() {
        return Err(E::custom(
            "a token cannot be empty: set it, e.g. \"${ADMIN_TOKEN}\" with ADMIN_TOKEN in the environment",
        ));
    }
    Ok(token)
}

/// A token the host presents as `Authorization: Bearer <token>` to a server it calls.
/// Its `Debug` hides it, and the header it makes is marked sensitive (kept out of HTTP/2
/// header compression tables and of the client's logs).
#[derive(Clone)]
pub struct ClientToken(HeaderValue);

impl ClientToken {
    /// The `Authorization` header's value.
    pub fn authorization(&self) -> HeaderValue {
        self.0.clone()
    }
}

impl std::fmt::Debug for ClientToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientToken(..)")
    }
}

impl<'de> serde::Deserialize<'de> for ClientToken {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let token = non_empty(String::deserialize(deserializer)?)?;
        let mut value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
            serde::de::Error::custom("a token must be visible ASCII, without line breaks")
        })?;
        value.set_sensitive(true);
        Ok(ClientToken(value))
    }
}

/// The digest of the token a request presents, computed once for comparing it with
/// several expected ones.
pub struct Presented([u8; 32]);

impl Presented {
    /// The `Authorization: Bearer <token>` of `headers`, or the password of HTTP Basic
    /// (`Basic base64(user:token)`, the user ignored: how a browser opening the admin page
    /// presents the token); `None` without either.
    pub fn from_headers(headers: &HeaderMap) -> Option<Presented> {
        use base64::Engine;
        let value = headers.get(header::AUTHORIZATION)?.as_bytes();
        if let Some(token) = value.strip_prefix(b"Bearer ") {
            return Some(Presented(Sha256::digest(token).into()));
        }
        let encoded = value.strip_prefix(b"Basic ")?;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .ok()?;
        let colon = decoded.iter().position(|byte| *byte == b':')?;
        Some(Presented(Sha256::digest(&decoded[colon + 1..]).into()))
    }
}

impl Presented {
    /// A secret presented some other way than a header (an MQTT password).
    pub fn secret(secret: &[u8]) -> Presented {
        Presented(Sha256::digest(secret).into())
    }
}

/// Which of `tokens` the request bears: every one is compared, so that the time taken
/// tells neither which one matched nor how far a guess got.
pub fn find<'a, K>(
    presented: &Presented,
    tokens: impl IntoIterator<Item = (K, &'a BearerToken)>,
) -> Option<K> {
    let mut found = None;
    for (key, token) in tokens {
        if token.matches(presented) {
            found = Some(key);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn presented(value: &str) -> Option<Presented> {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        Presented::from_headers(&headers)
    }

    #[test]
    fn only_the_exact_bearer_token_matches() {
        let token = BearerToken::new("s3cret");
        let admits = |value: &str| presented(value).is_some_and(|p| token.matches(&p));
        assert!(admits("Bearer s3cret"));
        assert!(!admits("Bearer s3cre"));
        assert!(!admits("Bearer s3cret2"));
        assert!(!admits("Bearer S3CRET"));
        assert!(!admits("Bearer "));
        assert!(!admits("Basic s3cret"));
        assert!(admits("Basic YWRtaW46czNjcmV0")); // admin:s3cret
        assert!(!admits("Basic YWRtaW46czNjcmU=")); // admin:s3cre
        assert!(!admits("s3cret"));
        assert!(Presented::from_headers(&HeaderMap::new()).is_none());
    }

    #[test]
    fn find_names_the_matching_token_among_several() {
        let tokens = [
            ("a", BearerToken::new("one")),
            ("b", BearerToken::new("two")),
        ];
        let pairs = || tokens.iter().map(|(key, token)| (*key, token));
        assert_eq!(find(&presented("Bearer two").unwrap(), pairs()), Some("b"));
        assert_eq!(find(&presented("Bearer three").unwrap(), pairs()), None);
    }
}
