package approver

import (
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/certagent/certagent/cluster/enrollment"
)

// watchEnrollments reads the TPMEnrollments from cfg.Enrollments, if set,
// and decides every pending CSR again when one is added, changed or
// deleted: an operator who lists a node's new address approves its CSR.
func (c *Controller) watchEnrollments() error {
	if c.cfg.Enrollments == nil {
		return nil
	}
	store, err := enrollment.New(c.cfg.Enrollments)
	if err != nil {
		return fmt.Errorf("approver: %w", err)
	}
	c.enrolled = store
	if _, err := c.cfg.Enrollments.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(any) { c.enqueuePending() },
		UpdateFunc: func(o, n any) {
			if changed(o, n) {
				c.enqueuePending()
			}
		},
		DeleteFunc: func(any) { c.enqueuePending() },
	}); err != nil {
		return fmt.Errorf("approver: watching TPMEnrollments: %w", err)
	}
	return nil
}

// changed: not a resync of the same version (one without a version, as a
// fake client's, counts as changed).
func changed(oldObj, newObj any) bool {
	o, ok1 := oldObj.(metav1.Object)
	n, ok2 := newObj.(metav1.Object)
	return !ok1 || !ok2 || n.GetResourceVersion() == "" || o.GetResourceVersion() != n.GetResourceVersion()
}
