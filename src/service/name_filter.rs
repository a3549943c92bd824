//! Filters on stream names or event types that the engine's own [`crate::Filter`] cannot
//! express: regular expressions (.NET `Regex.IsMatch` semantics: a match anywhere, lookaround
//! allowed) and prefix lists. The KurrentDB adapter's read and subscription filters and the
//! filters of persistent-subscription groups on `$all` are both these.
//!
//! A pattern is bounded three ways: its length ([`REGEX_BYTES_MAX`]), its compiled size, and
//! the backtracking steps of one match ([`REGEX_STEPS_MAX`]); a call also has a matching-time
//! budget, so a pathological pattern costs a bounded share of a core.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Matcher;
use crate::error::{Error, Limit, Result};

/// Longest regular expression a filter may hold, in bytes.
pub const REGEX_BYTES_MAX: usize = 4096;
/// Steps one match of a filter's regular expression may take (backtracking), so that a
/// pathological pattern costs a bounded time per name.
pub const REGEX_STEPS_MAX: usize = 100_000;
/// Memory the compiled regular expression may use.
const REGEX_COMPILED_BYTES_MAX: usize = 1 << 20;
/// Matching time a call may spend at once, and how fast that budget refills: a filter may use
/// a tenth of a core on average, in bursts of up to a second. A call that spends it fails.
const MATCH_BUDGET: Duration = Duration::from_secs(1);
const MATCH_REFILL_PER_S: Duration = Duration::from_millis(100);

/// What a filter looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject {
    StreamName,
    EventType,
}

enum Rule {
    /// A match anywhere in the name (search, not full match).
    Regex(fancy_regex::Regex),
    Prefixes(Vec<String>),
}

/// A compiled name filter.
pub struct NameFilter {
    subject: Subject,
    rule: Rule,
    budget: parking_lot::Mutex<Budget>,
}

/// Matching time left to a call, refilled with time.
struct Budget {
    left: Duration,
    at: Instant,
}

/// Checks a pattern's length before anything compiles it.
pub fn check_regex_size(pattern: &str) -> Result<()> {
    if pattern.len() > REGEX_BYTES_MAX {
        return Err(Error::LimitExceeded {
            what: Limit::FilterRegexBytes,
            limit: REGEX_BYTES_MAX as u64,
            actual: pattern.len() as u64,
        });
    }
    Ok(())
}

impl NameFilter {
    /// Compiles a regular expression (size-checked first). Compilation costs CPU in proportion
    /// to the pattern: call it off the async runtime's workers for long patterns.
    pub fn regex(subject: Subject, pattern: &str) -> Result<NameFilter> {
        check_regex_size(pattern)?;
        let regex = fancy_regex::RegexBuilder::new(pattern)
            .backtrack_limit(REGEX_STEPS_MAX)
            .delegate_size_limit(REGEX_COMPILED_BYTES_MAX)
            .delegate_dfa_size_limit(REGEX_COMPILED_BYTES_MAX)
            .build()
            .map_err(|e| Error::InvalidArgument(format!("filter regex '{pattern}': {e}")))?;
        Ok(NameFilter::new(subject, Rule::Regex(regex)))
    }

    /// Names starting with one of `prefixes`.
    pub fn prefixes(subject: Subject, prefixes: Vec<String>) -> NameFilter {
        NameFilter::new(subject, Rule::Prefixes(prefixes))
    }

    fn new(subject: Subject, rule: Rule) -> NameFilter {
        NameFilter {
            subject,
            rule,
            budget: parking_lot::Mutex::new(Budget {
                left: MATCH_BUDGET,
                at: Instant::now(),
            }),
        }
    }

    pub fn into_matcher(self) -> Arc<dyn Matcher> {
        Arc::new(self)
    }
}

impl Matcher for NameFilter {
    fn matches(&self, stream: &str, event_type: &str) -> Result<bool> {
        let subject = match self.subject {
            Subject::StreamName => stream,
            Subject::EventType => event_type,
        };
        match &self.rule {
            Rule::Prefixes(p) => Ok(p.iter().any(|p| subject.starts_with(p.as_str()))),
            Rule::Regex(r) => {
                let started = Instant::now();
                let matched = r.is_match(subject);
                let spent = started.elapsed();
                let mut budget = self.budget.lock();
                let refill = MATCH_REFILL_PER_S.mul_f64(budget.at.elapsed().as_secs_f64());
                budget.at = Instant::now();
                budget.left = (budget.left + refill).min(MATCH_BUDGET);
                let over = Error::LimitExceeded {
                    what: Limit::FilterRegexSteps,
                    limit: REGEX_STEPS_MAX as u64,
                    actual: REGEX_STEPS_MAX as u64 + 1,
                };
                match budget.left.checked_sub(spent) {
                    Some(left) => budget.left = left,
                    None => return Err(over),
                }
                // A name on which the pattern runs past its step limit fails the call rather
                // than silently not matching.
                matched.map_err(|_| over)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regex_searches_anywhere_and_supports_lookahead() {
        let f = NameFilter::regex(Subject::StreamName, "^(?!\\$)order").unwrap();
        assert!(f.matches("order-1", "X").unwrap());
        assert!(!f.matches("$order-1", "X").unwrap());
        let f = NameFilter::regex(Subject::EventType, "Placed").unwrap();
        assert!(f.matches("s", "OrderPlaced").unwrap());
        assert!(!f.matches("Placed", "OrderShipped").unwrap());
    }

    #[test]
    fn bad_and_oversized_patterns_are_refused() {
        assert!(matches!(
            NameFilter::regex(Subject::StreamName, "("),
            Err(Error::InvalidArgument(_))
        ));
        let long = "a".repeat(REGEX_BYTES_MAX + 1);
        assert!(matches!(
            NameFilter::regex(Subject::StreamName, &long),
            Err(Error::LimitExceeded {
                what: Limit::FilterRegexBytes,
                ..
            })
        ));
    }

    #[test]
    fn prefixes_match_the_chosen_subject() {
        let f = NameFilter::prefixes(Subject::EventType, vec!["Order".into(), "Pay".into()]);
        assert!(f.matches("x", "PaymentMade").unwrap());
        assert!(!f.matches("Order-1", "Shipped").unwrap());
    }
}
