//! Topic patterns with AMQP topic-exchange semantics, so the in-process bus
//! routes exactly as RabbitMQ does: words are separated by `.`, `*` matches
//! exactly one word, `#` matches zero or more words.

use super::BusError;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Word {
    Literal(String),
    One,
    Any,
}

/// A parsed binding pattern such as `order.*.#`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicPattern {
    source: String,
    words: Vec<Word>,
}

impl TopicPattern {
    /// Parses a pattern. Empty words (`a..b`, leading or trailing dot, the
    /// empty pattern) are [`BusError::InvalidPattern`].
    pub fn parse(pattern: &str) -> Result<Self, BusError> {
        let words = pattern
            .split('.')
            .map(|w| match w {
                "" => Err(BusError::InvalidPattern(pattern.to_owned())),
                "*" => Ok(Word::One),
                "#" => Ok(Word::Any),
                w => Ok(Word::Literal(w.to_owned())),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(TopicPattern {
            source: pattern.to_owned(),
            words,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether a routing key matches.
    pub fn matches(&self, routing_key: &str) -> bool {
        let key: Vec<&str> = routing_key.split('.').collect();
        // reachable[j]: pattern prefix so far matches key[..j].
        let mut reachable = vec![false; key.len() + 1];
        reachable[0] = true;
        for word in &self.words {
            let mut next = vec![false; key.len() + 1];
            match word {
                Word::Any => {
                    let mut on = false;
                    for j in 0..=key.len() {
                        on |= reachable[j];
                        next[j] = on;
                    }
                }
                Word::One => {
                    next[1..].copy_from_slice(&reachable[..key.len()]);
                }
                Word::Literal(lit) => {
                    for j in 0..key.len() {
                        next[j + 1] = reachable[j] && key[j] == lit;
                    }
                }
            }
            reachable = next;
        }
        reachable[key.len()]
    }
}

/// Whether any of the patterns matches.
pub fn any_matches(patterns: &[TopicPattern], routing_key: &str) -> bool {
    patterns.iter().any(|p| p.matches(routing_key))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, k: &str) -> bool {
        TopicPattern::parse(p).expect("valid pattern").matches(k)
    }

    #[test]
    fn literal_and_star() {
        assert!(m("order.captured.m1", "order.captured.m1"));
        assert!(!m("order.captured.m1", "order.captured.m2"));
        assert!(m("order.*.m1", "order.captured.m1"));
        assert!(!m("order.*", "order.captured.m1"));
        assert!(!m("*.captured.*", "order.captured"));
        assert!(m("*.*.*", "a.b.c"));
    }

    #[test]
    fn hash_matches_zero_or_more() {
        assert!(m("#", "order.captured.m1"));
        assert!(m("order.#", "order"));
        assert!(m("order.#", "order.captured.m1"));
        assert!(!m("order.#", "orders.captured"));
        assert!(m("#.m1", "order.captured.m1"));
        assert!(m("#.m1", "m1"));
        assert!(m("order.#.m1", "order.m1"));
        assert!(m("order.#.m1", "order.a.b.c.m1"));
        assert!(!m("order.#.m1", "order.a.b.c.m2"));
        assert!(m("#.*.#", "a"));
        assert!(!m("*.#.*", "a"));
        assert!(m("*.#.*", "a.b"));
    }

    #[test]
    fn invalid_patterns() {
        for p in ["", "a..b", ".a", "a."] {
            assert!(TopicPattern::parse(p).is_err(), "{p:?}");
        }
    }
}
