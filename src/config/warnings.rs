//! Settings that are valid but unsafe: `wharf check` prints them and
//! `wharf run` logs them, and neither refuses the config.

use super::{Config, StickyConfig};

/// One sentence per unsafe setting, naming where it is.
pub fn warnings(config: &Config) -> Vec<String> {
    config
        .pools
        .iter()
        .filter_map(|pool| match &pool.sticky {
            Some(StickyConfig::Cookie(cookie)) if cookie.secret.is_empty() => Some(format!(
                "pool `{}`: the sticky cookie `{}` has no `secret`: anyone who knows or guesses \
                 the server addresses can match a token to the private address behind it \
                 offline; set `secret` (the same on every wharf instance, so that they agree \
                 on tokens)",
                pool.name, cookie.name
            )),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(sticky: &str) -> Config {
        let text = format!(
            "[[listener]]\nname = \"l\"\nbind = \"127.0.0.1:0\"\n[[listener.route]]\npool = \"p\"\n\
             [pool.p]\nservers = [\"127.0.0.1:1\"]\nsticky = {sticky}\n"
        );
        super::super::parse_str("t.toml", &text).expect("valid config")
    }

    #[test]
    fn a_sticky_cookie_without_a_secret_is_warned_about() {
        let found = warnings(&config("{ cookie = \"wharf\" }"));
        assert_eq!(found.len(), 1);
        assert!(found[0].contains("pool `p`") && found[0].contains("secret"));
        assert!(warnings(&config("{ cookie = \"wharf\", secret = \"s3cret\" }")).is_empty());
        assert!(warnings(&config("{ learn = \"cookie:io\" }")).is_empty());
    }
}
