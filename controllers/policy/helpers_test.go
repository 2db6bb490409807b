package policy

import (
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/types"
)

func mustQuantity(s string) resource.Quantity { return resource.MustParse(s) }

func typesUID(s string) types.UID { return types.UID(s) }
