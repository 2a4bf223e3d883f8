//! certplane's AWS drivers. Credentials come only from the default provider chain (instance profile
//! through IMDSv2 in production, the environment in tests); the endpoint can be redirected with the
//! standard `AWS_ENDPOINT_URL` variables (moto in tests).

pub mod acm;
pub mod iam;
pub mod pca;
pub mod serial;
