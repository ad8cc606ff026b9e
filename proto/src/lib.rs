//! The control protocol of bastiond: `bastion.v1.Control`, generated from
//! `bastion/v1/control.proto` by tonic/prost.

#[allow(clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("bastion.v1");
}

/// Formats a target the way users type it: `10.1.0.4:22`, `[fd00::4]:22`.
impl std::fmt::Display for v1::Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') && !self.host.starts_with('/') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}
