//! The WASI 0.3 adapter's one error mapping: [`crate::LockError`] onto the WIT `error` of 0.3.1,
//! and the host's unlock statuses and leaders onto its types.

use crate::calls::wit_mapping;

wit_mapping!(crate::p3::bindings::latchkey::lock::locks);
wit_mapping!(leader: crate::p3::bindings::latchkey::lock::locks);
