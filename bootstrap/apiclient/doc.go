// Package apiclient is how the node talks to the API server (node side):
// lean REST clients of the three API groups certagent uses (CSRs of
// certificates.k8s.io, SelfSubjectReviews of authentication.k8s.io, Events of
// events.k8s.io), in protobuf as the kubelet's own client, over one transport
// per credential (Clients), owned by whoever built it, whose idle connections
// it can close.
//
// It makes requests and decides nothing: what to ask for, when, and what an
// answer means are package bootstrap's (an Event's content package
// observe's). It registers those API groups only, not client-go's clientset,
// to keep the node's binary and memory small.
package apiclient
