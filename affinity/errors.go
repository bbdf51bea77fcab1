package affinity

import "errors"

// ErrNotSupported is returned by every host operation on a platform other
// than Linux, and (wrapped) where the running kernel lacks the control.
var ErrNotSupported = errors.New("not supported on this platform")
