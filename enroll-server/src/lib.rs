//! inkan's enrollment service: the browser acquisition pipeline, certificate login and
//! reissue. Built in the enrollment-service issue; the CA core does not depend on it.

#![forbid(unsafe_code)]
#![deny(missing_docs)]
