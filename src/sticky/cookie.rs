//! The inserted sticky cookie, and reading cookies from requests and responses.
//!
//! The cookie names its server by a token, HMAC-SHA256 of the pool and the
//! server's address under the pool's `secret`: it leaks no address, is the
//! same on every wharf with the same config (and across restarts), and is
//! only ever looked up among the pool's own servers, so a forged or stale
//! token can at worst pick one of them.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use http::HeaderMap;
use http::header::{self, HeaderValue};
use sha2::Sha256;

use crate::config::{SameSite, StickyCookie};

/// Token length in base64 characters: 96 bits.
const TOKEN_CHARS: usize = 16;

#[derive(Debug)]
pub struct StickyCookies {
    config: StickyCookie,
    /// Token of each server, by index in the pool.
    tokens: Vec<String>,
}

impl StickyCookies {
    pub fn new(config: &StickyCookie, pool: &str, addresses: &[String]) -> Self {
        let tokens = addresses
            .iter()
            .map(|address| token(&config.secret, pool, address))
            .collect();
        StickyCookies {
            config: config.clone(),
            tokens,
        }
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// The server a request's cookie names, if it names one of this pool's.
    pub fn server_of(&self, headers: &HeaderMap) -> Option<usize> {
        let value = find(headers, &self.config.name)?;
        self.tokens.iter().position(|t| t == value)
    }

    /// Whether the request's cookie already names `server`.
    pub fn names(&self, headers: &HeaderMap, server: usize) -> bool {
        self.server_of(headers) == Some(server)
    }

    /// The `Set-Cookie` that pins a client to `server`; `tls` adds `Secure`.
    pub fn set_cookie(&self, server: usize, tls: bool) -> Option<HeaderValue> {
        let token = self.tokens.get(server)?;
        let c = &self.config;
        let mut cookie = format!(
            "{}={token}; Path=/; HttpOnly; SameSite={}",
            c.name,
            c.same_site.as_str()
        );
        // Browsers drop `SameSite=None` cookies that are not `Secure`.
        if tls || c.secure || c.same_site == SameSite::None {
            cookie.push_str("; Secure");
        }
        if let Some(max_age) = c.max_age {
            cookie.push_str(&format!("; Max-Age={}", max_age.as_secs()));
        }
        HeaderValue::from_str(&cookie).ok()
    }
}

fn token(secret: &str, pool: &str, address: &str) -> String {
    // HMAC takes keys of any length, so this cannot fail.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return String::new();
    };
    mac.update(pool.as_bytes());
    mac.update(b"\0");
    mac.update(address.as_bytes());
    let digest = mac.finalize().into_bytes();
    let mut token = URL_SAFE_NO_PAD.encode(digest);
    token.truncate(TOKEN_CHARS);
    token
}

/// The pairs of every `Cookie` header: `a=1; b=2` → (a, 1), (b, 2).
fn pairs(headers: &HeaderMap) -> impl Iterator<Item = (&str, &str)> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| {
            let (name, value) = pair.split_once('=')?;
            Some((name.trim(), value.trim().trim_matches('"')))
        })
}

/// The value of request cookie `name`.
pub fn find<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    pairs(headers).find(|(n, _)| *n == name).map(|(_, v)| v)
}

/// Removes cookie `name` from the request's `Cookie` headers, keeping the others.
pub fn remove(headers: &mut HeaderMap, name: &str) {
    if find(headers, name).is_none() {
        return;
    }
    // Other pairs are kept exactly as sent (quotes, valueless ones and all).
    let kept: Vec<String> = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|pair| !pair.is_empty() && pair.split('=').next().map(str::trim) != Some(name))
        .map(str::to_owned)
        .collect();
    headers.remove(header::COOKIE);
    if !kept.is_empty()
        && let Ok(value) = HeaderValue::from_str(&kept.join("; "))
    {
        headers.insert(header::COOKIE, value);
    }
}

/// The values a response sets for cookie `name` (`Set-Cookie: name=VALUE; …`),
/// skipping deletions (empty values).
pub fn set_cookie_values(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| {
            let first = v.split(';').next()?;
            let (n, value) = first.split_once('=')?;
            let value = value.trim().trim_matches('"');
            (n.trim() == name && !value.is_empty()).then(|| value.to_owned())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(same_site: SameSite) -> StickyCookie {
        StickyCookie {
            name: "wharf".into(),
            same_site,
            secure: false,
            max_age: None,
            secret: "s3cret".into(),
        }
    }

    fn addresses() -> Vec<String> {
        vec!["127.0.0.1:3001".into(), "127.0.0.1:3002".into()]
    }

    #[test]
    fn tokens_are_opaque_stable_and_distinct() {
        let a = StickyCookies::new(&config(SameSite::Lax), "rt", &addresses());
        let b = StickyCookies::new(&config(SameSite::Lax), "rt", &addresses());
        assert_eq!(a.tokens, b.tokens);
        assert_ne!(a.tokens[0], a.tokens[1]);
        assert_eq!(a.tokens[0].len(), TOKEN_CHARS);
        assert!(!a.tokens[0].contains("127"));
        let other_secret = StickyCookies::new(
            &StickyCookie {
                secret: "other".into(),
                ..config(SameSite::Lax)
            },
            "rt",
            &addresses(),
        );
        assert_ne!(a.tokens[0], other_secret.tokens[0]);
    }

    #[test]
    fn request_cookie_names_a_server_only_by_a_valid_token() {
        let cookies = StickyCookies::new(&config(SameSite::Lax), "rt", &addresses());
        let mut headers = HeaderMap::new();
        let value = format!("a=1; wharf={}; b=2", cookies.tokens[1]);
        headers.insert(header::COOKIE, HeaderValue::from_str(&value).unwrap());
        assert_eq!(cookies.server_of(&headers), Some(1));
        headers.insert(header::COOKIE, HeaderValue::from_static("wharf=forged"));
        assert_eq!(cookies.server_of(&headers), None);
    }

    #[test]
    fn set_cookie_attributes() {
        let lax = StickyCookies::new(&config(SameSite::Lax), "rt", &addresses());
        let plain = lax.set_cookie(0, false).unwrap();
        let plain = plain.to_str().unwrap();
        assert!(plain.starts_with("wharf="));
        assert!(plain.ends_with("; Path=/; HttpOnly; SameSite=Lax"));
        assert!(
            lax.set_cookie(0, true)
                .unwrap()
                .to_str()
                .unwrap()
                .ends_with("; Secure")
        );
        let none = StickyCookies::new(&config(SameSite::None), "rt", &addresses());
        assert!(
            none.set_cookie(0, false)
                .unwrap()
                .to_str()
                .unwrap()
                .contains("SameSite=None; Secure")
        );
        assert!(lax.set_cookie(5, false).is_none());
    }

    #[test]
    fn remove_keeps_other_cookies() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; wharf=x; io=abc"),
        );
        remove(&mut headers, "wharf");
        assert_eq!(headers[header::COOKIE], "a=1; io=abc");
        headers.insert(header::COOKIE, HeaderValue::from_static("wharf=x"));
        remove(&mut headers, "wharf");
        assert!(headers.get(header::COOKIE).is_none());
        // Other pairs pass exactly as sent.
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("wharf=T; a=\"x\"; flag"),
        );
        remove(&mut headers, "wharf");
        assert_eq!(headers[header::COOKIE], "a=\"x\"; flag");
    }

    #[test]
    fn set_cookie_values_reads_the_named_cookie() {
        let mut headers = HeaderMap::new();
        headers.append(
            header::SET_COOKIE,
            HeaderValue::from_static("io=abc123; Path=/; HttpOnly"),
        );
        headers.append(header::SET_COOKIE, HeaderValue::from_static("other=1"));
        headers.append(
            header::SET_COOKIE,
            HeaderValue::from_static("io=; Max-Age=0"),
        );
        assert_eq!(set_cookie_values(&headers, "io"), vec!["abc123".to_owned()]);
    }
}
