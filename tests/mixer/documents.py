"""Documents and credentials shared by the mixer's API tests (REST, gRPC, operator CLI)."""

TOKEN = "s3cret-token-for-tests"
BOOTSTRAP = "bootstrap-token-for-tests"  # racks present it in their hello

SCENARIO = """\
name: payment-flow
gears:
  - name: gen
    type: generator
    config: {rate: 0, count: 1}
  - name: out
    type: sink
wires:
  - {from: gen.out, to: out.in, transport: memory}
"""
SCENARIO_V2 = SCENARIO + "# v2\n"
INVALID_SCENARIO = """\
name: broken
gears:
  - name: gen
    type: generator
    config:
      rate: -1
      colour: red
  - name: ghost
    type: no_such_gear
wires:
  - {from: gen.out, to: nowhere.in}
"""
