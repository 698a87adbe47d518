//! `expect_failure:` (the step that must fail, its cause and evidence) and `fail_on:` (texts
//! that fail a run when the console shows them).

use serde_saphyr::Spanned;

use super::{one_of, ScenarioError, Validator};
use crate::scenario::raw::{RawExpectedFailure, RawScenario};
use crate::scenario::values::shown;
use crate::scenario::{default_fail_patterns, Cause, ExpectedFailure, FailPattern, Step};

impl Validator<'_> {
    /// `expect_failure.step` must name exactly one step.
    pub(super) fn expect_failure(
        &self,
        raw: &RawScenario,
        steps: &[Step],
    ) -> Result<Option<ExpectedFailure>, ScenarioError> {
        Ok(match &raw.expect_failure {
            None => None,
            Some(ef) => {
                let matching = steps.iter().filter(|s| s.name == ef.value.step).count();
                if matching != 1 {
                    let msg = if matching == 0 {
                        format!(
                            "`expect_failure.step` names no step: `{}`",
                            shown(&ef.value.step)
                        )
                    } else {
                        format!(
                            "`{}` names {matching} steps; give them distinct `name`s",
                            ef.value.step
                        )
                    };
                    return Err(self.at(
                        ef,
                        msg,
                        Some(one_of(steps.iter().map(|s| s.name.as_str()))),
                    ));
                }
                Some(self.expected_failure(ef)?)
            }
        })
    }

    /// `expect_failure` names its cause and the guest's or a service's own words for it.
    fn expected_failure(
        &self,
        ef: &Spanned<RawExpectedFailure>,
    ) -> Result<ExpectedFailure, ScenarioError> {
        let causes = || one_of(Cause::ALL.iter().map(|c| c.name()));
        if let Some(old) = &ef.value.reason {
            return Err(self.at(
                old,
                "`expect_failure.reason` is no longer read: it was matched against the harness's \
                 own wording of the failure, which other failures share; name the failure's \
                 `cause` and its `evidence` (text of the console line or service record that \
                 proves it) instead",
                Some(format!(
                    "e.g. `cause: console-failure` with `evidence: \"Gave up waiting for root\"`; \
                     the causes, {}",
                    causes()
                )),
            ));
        }
        let Some(cause) = ef.value.cause else {
            return Err(self.at(
                ef,
                "`expect_failure` needs a `cause`: why the step must fail",
                Some(causes()),
            ));
        };
        let evidence = match (&ef.value.evidence, cause.has_evidence()) {
            (Some(e), false) => {
                return Err(self.at(
                    e,
                    format!(
                        "a `{cause}` failure has no evidence to match: drop `evidence`, and let \
                         the steps before it assert what the guest and the services did"
                    ),
                    None,
                ))
            }
            (Some(e), true) if e.value.trim().is_empty() => {
                return Err(self.at(e, "`evidence` is empty: it would match anything", None))
            }
            (None, true) => {
                return Err(self.at(
                    ef,
                    format!(
                        "a `{cause}` failure must name its `evidence`: text of the console line, \
                         record or exit status that proves it"
                    ),
                    None,
                ))
            }
            (e, _) => e.as_ref().map(|e| e.value.clone()),
        };
        Ok(ExpectedFailure {
            step: ef.value.step.clone(),
            cause,
            evidence,
        })
    }

    /// The default failure texts unless switched off, then the scenario's own.
    pub(super) fn fail_on(&self, raw: &RawScenario) -> Result<Vec<FailPattern>, ScenarioError> {
        let mut fail_on = if raw.default_fail_on {
            default_fail_patterns()
        } else {
            Vec::new()
        };
        for t in &raw.fail_on {
            if t.value.trim().is_empty() {
                return Err(self.at(
                    t,
                    "`fail_on` has an empty text, which would match every line",
                    None,
                ));
            }
            fail_on.push(FailPattern {
                text: t.value.clone(),
                meaning: "the scenario lists this text under fail_on".into(),
            });
        }
        Ok(fail_on)
    }
}
