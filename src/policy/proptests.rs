//! Property tests of [`super::Policy::evaluate`] (filled in by the policy-properties work).
