package install

import (
	"testing"

	"github.com/holdfast-dev/holdfast/test/testenv"
)

var env *testenv.Env

func TestMain(m *testing.M) { testenv.Run(m, &env, testenv.Options{}) }
