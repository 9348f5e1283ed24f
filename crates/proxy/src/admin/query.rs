//! The query strings of the admin's observation endpoints, parsed once into what the
//! handlers use: [`WindowQuery`] (`/stats`, `/decisions`) and [`TapFilter`] (`/tap`).
//! A bad parameter is a `400` naming it and what it takes.

use std::borrow::Cow;
use std::time::Duration;

use http::HeaderName;
use percent_encoding::percent_decode_str;

use crate::label::Label;
use crate::metrics::Direction;
use crate::tap::Tapped;

/// The shortest and longest window offered, in seconds (the ring holds 600 samples).
const WINDOW_SECS: (u64, u64) = (1, 600);
/// The window when none is asked for.
const DEFAULT_WINDOW_SECS: u64 = 60;
/// Header names one tap may list.
const MAX_TAP_HEADERS: usize = 16;

/// What is wrong with a query parameter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// `window` is not a whole number.
    #[error("window={value:?}: not a whole number of seconds (1-600, default 60)")]
    Window {
        /// As sent.
        value: String,
    },
    /// `direction` is not a direction.
    #[error("direction={value:?}: neither inbound nor outbound")]
    Direction {
        /// As sent.
        value: String,
    },
    /// `denied` is not a boolean.
    #[error("denied={value:?}: neither true nor false")]
    Denied {
        /// As sent.
        value: String,
    },
    /// `limit` is not a positive whole number.
    #[error("limit={value:?}: not a positive whole number of events")]
    Limit {
        /// As sent.
        value: String,
    },
    /// `header` is not a header name, or too many were listed.
    #[error("header={value:?}: not a header name (at most 16 per tap)")]
    Header {
        /// As sent.
        value: String,
    },
    /// `header` names a field that carries credentials or the mesh's own fields: a tap
    /// must not hand another workload's secrets to any local process.
    #[error(
        "header={name}: refused, it carries credentials or mesh-reserved fields (authorization, proxy-authorization, cookie, set-cookie and x-meshwork-* are never tapped)"
    )]
    SecretHeader {
        /// The name, lower case.
        name: String,
    },
    /// A parameter the endpoint does not take.
    #[error("{name}: unknown parameter (this endpoint takes {takes})")]
    Unknown {
        /// As sent.
        name: String,
        /// What it takes.
        takes: &'static str,
    },
}

/// `key=value` pairs of `query`, `+` and `%XX` decoded.
fn pairs(query: Option<&str>) -> impl Iterator<Item = (String, String)> + '_ {
    query
        .unwrap_or("")
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(key), decode(value))
        })
}

fn decode(text: &str) -> String {
    let spaced: Cow<'_, str> = if text.contains('+') {
        Cow::Owned(text.replace('+', " "))
    } else {
        Cow::Borrowed(text)
    };
    percent_decode_str(&spaced).decode_utf8_lossy().into_owned()
}

/// `?window=SECS`: clamped to 1–600 s, 60 s when absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowQuery {
    /// The window asked for, clamped.
    pub window: Duration,
}

impl TryFrom<Option<&str>> for WindowQuery {
    type Error = QueryError;

    fn try_from(query: Option<&str>) -> Result<Self, QueryError> {
        let mut secs = DEFAULT_WINDOW_SECS;
        for (key, value) in pairs(query) {
            match key.as_str() {
                "window" => {
                    secs = value.parse().map_err(|_| QueryError::Window { value })?;
                }
                _ => {
                    return Err(QueryError::Unknown {
                        name: key,
                        takes: "window",
                    });
                }
            }
        }
        let secs = secs.clamp(WINDOW_SECS.0, WINDOW_SECS.1);
        Ok(WindowQuery {
            window: Duration::from_secs(secs),
        })
    }
}

/// `/tap`'s filters: which finished requests a tapper sees, how many, and which request
/// headers' values it gets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TapFilter {
    /// Only this listener's requests.
    pub direction: Option<Direction>,
    /// Only this service's (`[egress]`, `[none]` included).
    pub service: Option<String>,
    /// Only this route template's (or `[unmatched]`).
    pub route: Option<String>,
    /// `Some(true)`: only denials; `Some(false)`: only what was let through.
    pub denied: Option<bool>,
    /// End the stream after this many events (lost-event markers not counted).
    pub limit: Option<u64>,
    /// The request headers whose values the events carry.
    pub headers: Vec<HeaderName>,
}

impl TryFrom<Option<&str>> for TapFilter {
    type Error = QueryError;

    fn try_from(query: Option<&str>) -> Result<Self, QueryError> {
        let mut filter = TapFilter::default();
        for (key, value) in pairs(query) {
            match key.as_str() {
                "direction" => {
                    filter.direction = Some(match value.as_str() {
                        "inbound" => Direction::Inbound,
                        "outbound" => Direction::Outbound,
                        _ => return Err(QueryError::Direction { value }),
                    });
                }
                "service" => filter.service = Some(value),
                "route" => filter.route = Some(value),
                "denied" => {
                    let denied = value.parse().map_err(|_| QueryError::Denied { value })?;
                    filter.denied = Some(denied);
                }
                "limit" => match value.parse::<u64>() {
                    Ok(limit) if limit > 0 => filter.limit = Some(limit),
                    _ => return Err(QueryError::Limit { value }),
                },
                "header" => {
                    let name = HeaderName::try_from(value.as_str())
                        .ok()
                        .filter(|_| filter.headers.len() < MAX_TAP_HEADERS)
                        .ok_or_else(|| QueryError::Header {
                            value: value.clone(),
                        })?;
                    if is_secret(&name) {
                        let name = name.as_str().to_owned();
                        return Err(QueryError::SecretHeader { name });
                    }
                    if !filter.headers.contains(&name) {
                        filter.headers.push(name);
                    }
                }
                _ => {
                    return Err(QueryError::Unknown {
                        name: key,
                        takes: "direction, service, route, denied, limit, header",
                    });
                }
            }
        }
        Ok(filter)
    }
}

/// Fields a tap never shows: credentials, and the mesh's own (`x-meshwork-*`).
fn is_secret(name: &HeaderName) -> bool {
    *name == http::header::AUTHORIZATION
        || *name == http::header::PROXY_AUTHORIZATION
        || *name == http::header::COOKIE
        || *name == http::header::SET_COOKIE
        || crate::reserved_headers::is_reserved(name)
}

impl TapFilter {
    /// Whether `tapped` passes the filters.
    pub fn matches(&self, tapped: &Tapped) -> bool {
        let text = |want: &Option<String>, label: Label| {
            want.as_deref().is_none_or(|want| want == label.as_str())
        };
        self.direction.is_none_or(|d| d == tapped.direction)
            && text(&self.service, tapped.service)
            && text(&self.route, tapped.route)
            && self
                .denied
                .is_none_or(|denied| denied == tapped.denied.is_some())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_clamped_and_default_to_a_minute() {
        let secs = |q: Option<&str>| WindowQuery::try_from(q).unwrap().window.as_secs();
        assert_eq!(secs(None), 60);
        assert_eq!(secs(Some("window=5")), 5);
        assert_eq!(secs(Some("window=0")), 1);
        assert_eq!(secs(Some("window=86400")), 600);
        assert_eq!(
            WindowQuery::try_from(Some("window=1m")),
            Err(QueryError::Window {
                value: "1m".to_owned()
            })
        );
        let unknown = WindowQuery::try_from(Some("windw=5")).unwrap_err();
        assert_eq!(
            unknown.to_string(),
            "windw: unknown parameter (this endpoint takes window)"
        );
    }

    #[test]
    fn tap_filters_are_decoded() {
        let filter = TapFilter::try_from(Some(
            "direction=inbound&service=billing&route=%2Fcharges%2F%7Bid%7D&denied=true&limit=3&header=X-Request-Id&header=x-request-id",
        ))
        .unwrap();
        assert_eq!(filter.direction, Some(Direction::Inbound));
        assert_eq!(filter.service.as_deref(), Some("billing"));
        assert_eq!(filter.route.as_deref(), Some("/charges/{id}"));
        assert_eq!(filter.denied, Some(true));
        assert_eq!(filter.limit, Some(3));
        assert_eq!(filter.headers, [HeaderName::from_static("x-request-id")]);
        assert_eq!(TapFilter::try_from(None).unwrap(), TapFilter::default());
        for bad in [
            "direction=up",
            "limit=0",
            "denied=yes",
            "header=a%20b",
            "body=1",
        ] {
            assert!(TapFilter::try_from(Some(bad)).is_err(), "{bad}");
        }
        for secret in [
            "Authorization",
            "proxy-authorization",
            "COOKIE",
            "set-cookie",
            "x-meshwork-client-id",
        ] {
            let error = TapFilter::try_from(Some(format!("header={secret}").as_str()));
            let lower = secret.to_ascii_lowercase();
            assert_eq!(
                error,
                Err(QueryError::SecretHeader {
                    name: lower.clone()
                })
            );
            let text = error.unwrap_err().to_string();
            assert!(
                text.starts_with(&format!("header={lower}: refused")),
                "{text}"
            );
        }
    }
}
