package apiclient

import (
	"context"

	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
)

// EventClient writes events.k8s.io/v1 Events. The Node authorizer lets a
// node create and patch Events with its own credential.
type EventClient interface {
	Create(ctx context.Context, e *eventsv1.Event) (*eventsv1.Event, error)
	// Patch applies a JSON merge patch to the Event namespace/name.
	Patch(ctx context.Context, namespace, name string, mergePatch []byte) error
}

type eventClient struct{ c *rest.RESTClient }

func (c *eventClient) Create(ctx context.Context, e *eventsv1.Event) (*eventsv1.Event, error) {
	out := &eventsv1.Event{}
	err := c.c.Post().Timeout(RequestTimeout).Namespace(e.Namespace).Resource("events").VersionedParams(&metav1.CreateOptions{}, parameterCdc).Body(e).Do(ctx).Into(out)
	return out, err
}

func (c *eventClient) Patch(ctx context.Context, namespace, name string, mergePatch []byte) error {
	return c.c.Patch(types.MergePatchType).Timeout(RequestTimeout).Namespace(namespace).Resource("events").Name(name).Body(mergePatch).Do(ctx).Error()
}
