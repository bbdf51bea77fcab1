// Package backend holds the contract between lowlat's socket API and the
// transports behind it: the message and connection types every backend
// implements, the options they share, and the errors they return.
//
// Applications use package bypass, which re-exports these types; a backend
// package (kernel, afxdp, efvi) imports this one and nothing above it, so the
// public package can list its backends explicitly instead of relying on
// registration in init functions.
//
// Ownership rules, common to every backend:
//   - Buffers belong to the caller. A read copies the datagram into the
//     caller's buffer; a write copies the payload out of it before returning.
//     No backend keeps a reference to a caller's slice after a call returns.
//   - A connection may be read by one goroutine and written by another at the
//     same time, but two concurrent readers (or two concurrent writers) must
//     synchronise between themselves. The hot paths take no locks.
//   - Hot-path errors are the package-level values below; they never allocate.
package backend
