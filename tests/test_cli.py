"""The command lines' config checks: every bad config file, preset, key or value is one
`UserError` naming the choices, found before absl parses the flags."""

import pytest
from absl import flags

from muppet_jax import cli
from muppet_jax.errors import UserError

DEMO = "--config=configs/prefinetune.py:demo"


@pytest.mark.parametrize("argv,message", [
    (["--config=configs/prefinetune.py:nope"],
     "unknown preset 'nope' of configs/prefinetune.py; choose roberta_large, roberta_base or demo"),
    (["--config=configs/prefinetune_bart.py:large"],
     "unknown preset 'large' of configs/prefinetune_bart.py; choose bart_large or demo"),
    (["--config=configs/nope.py"], "config file configs/nope.py does not exist"),
    (["--config", "configs/nope.py:demo"], "config file configs/nope.py does not exist"),
    (["--config=muppet_jax/errors.py"], "muppet_jax/errors.py has no get_config()"),
    ([DEMO, "--config.nope=1"], "unknown config key 'nope'; configs/prefinetune.py has checkpoint"),
    ([DEMO, "--config.data.nope=1"],
     "unknown config key 'data.nope'; data has bad_rows, batch_size"),
    ([DEMO, "--config.seed.x=1"], "unknown config key 'seed.x'; seed has no keys: it is a int"),
    ([DEMO, "--config.total_steps=abc"],
     "--config.total_steps=abc: invalid literal for int() with base 10: 'abc'; total_steps must "
     "be of type int (it is 600 in configs/prefinetune.py:demo)"),
    ([DEMO, "--config.data.packing=maybe"], "data.packing must be of type bool (it is True"),
    ([DEMO, "--config.mesh=3"], "mesh must be of type ConfigDict (it is {'data': 1"),
    (["--config=configs/finetune.py:glue", "--config.data.batch_size=x"],
     "data.batch_size must be of type int (it is None in configs/finetune.py:glue)"),
    # absl keeps the last --config; so does the check.
    ([DEMO, "--config=configs/prefinetune.py:nope"], "unknown preset 'nope'"),
])
def test_bad_config_flags_are_one_user_error(argv, message):
  with pytest.raises(UserError) as info:
    cli.check_config_flags(argv)
  assert message in str(info.value) and "\n" not in str(info.value)


def test_good_config_flags_pass(tmp_path):
  cli.check_config_flags([DEMO, "--config.total_steps=7", "--config.data.packing=false",
                          "--config.optimizer.learning_rate=3e-4", f"--workdir={tmp_path}"])
  cli.check_config_flags(["--workdir=x"])  # No config flag: nothing to check.


def test_a_config_file_that_does_not_parse(tmp_path):
  path = tmp_path / "broken.py"
  path.write_text("def get_config(:\n")
  with pytest.raises(UserError, match="broken.py does not parse"):
    cli.check_config_flags([f"--config={path}"])


def test_other_bad_flags_are_one_line_too(capsys):
  sandbox = flags.FlagValues()
  flags.DEFINE_bool("multihost", False, "", flag_values=sandbox)
  flags.DEFINE_string("workdir", None, "", flag_values=sandbox)
  parsed = cli.parse_flags(["prog", "--multihost", "--workdir=w", "rest"], sandbox)
  assert parsed == ["prog", "rest"]
  for bad, message in [("--multihost=maybe", "Non-boolean argument to boolean flag"),
                       ("--wrkdir=w", "Unknown command line flag 'wrkdir'")]:
    with pytest.raises(SystemExit) as info:
      cli.parse_flags(["prog", bad], sandbox)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
