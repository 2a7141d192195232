"""daas-hub-singleuser's command line (daas_hub/spawners/singleuser.py): the site's own
``--ServerApp.jpserver_extensions`` merged into the sessions' switches, given once.

:func:`session_args` is a pure builder (arguments in, arguments out), tested as a table.
The last tests run the installed ``daas-hub-singleuser`` with a malformed value: it exits
with 2 and one sentence before it imports the server. A session started by a real hub with
the site's argument: tests/test_singleuser_hub.py.
"""

from __future__ import annotations

import ast
import subprocess

import pytest

from daas_hub.spawners.singleuser import OPTION, ArgumentError, session_args

from conftest import BIN

SHIPPED = {"jupyter_lsp": False, "jupyterlab_h5web": False, "daas_hub.lazy_h5web": True}


def split(args: tuple[str, ...]) -> tuple[dict, list[str]]:
    """The one extensions argument, read back as a dict, and the other arguments."""
    options = list(args[:args.index("--")] if "--" in args else args)
    ours = [a for a in options if a == OPTION or a.startswith(OPTION + "=")]
    assert len(ours) == 1 and args[0] == ours[0], args  # once, first
    return ast.literal_eval(ours[0][len(OPTION) + 1:]), list(args[1:])


def test_no_site_arguments_the_shipped_switches():
    assert session_args(h5web=True) == (f"{OPTION}={SHIPPED!r}",)


def test_without_jupyterlab_h5web_no_hdf5_switches():
    assert split(session_args(h5web=False)) == ({"jupyter_lsp": False}, [])


@pytest.mark.parametrize(("argv", "switches"), [
    # the documented line (docs/local-backend.md), both spellings traitlets takes
    ([f"{OPTION}={{'jupyter_lsp': True}}"], {**SHIPPED, "jupyter_lsp": True}),
    ([OPTION, "{'jupyter_lsp': True}"], {**SHIPPED, "jupyter_lsp": True}),
    # traitlets' own item form, repeated; its words for booleans, any case
    ([OPTION, "jupyter_lsp=True"], {**SHIPPED, "jupyter_lsp": True}),
    ([f"{OPTION}=jupyter_lsp=1", OPTION, "my_ext=TRUE"], {**SHIPPED, "jupyter_lsp": True, "my_ext": True}),
    # later arguments win, as in traitlets
    ([f"{OPTION}={{'jupyter_lsp': True}}", f"{OPTION}=jupyter_lsp=false"], SHIPPED),
    # a site's own extension added, one of ours switched off
    ([f"{OPTION}={{'site_ext': True, 'jupyter_server_ydoc': False}}"],
     {**SHIPPED, "site_ext": True, "jupyter_server_ydoc": False}),
    # jupyterlab-h5web's own extension back on: the deferred one off (both serve /h5web/)
    ([f"{OPTION}={{'jupyterlab_h5web': True}}"], {"jupyter_lsp": False, "jupyterlab_h5web": True,
                                                   "daas_hub.lazy_h5web": False}),
    # the deferred endpoints off, and nothing in their place: the site's word
    ([f"{OPTION}={{'daas_hub.lazy_h5web': False}}"], {**SHIPPED, "daas_hub.lazy_h5web": False}),
    ([f"{OPTION}={{}}"], SHIPPED),
])
def test_site_switches_merged_site_wins(argv, switches):
    assert split(session_args(argv, h5web=True)) == (switches, [])


def test_other_arguments_kept_in_their_order():
    argv = ["--debug", f"{OPTION}={{'jupyter_lsp': True}}", "--SingleUserNotebookApp.default_url=/lab",
            OPTION, "x=false", "--port=8888"]
    switches, rest = split(session_args(argv, h5web=True))
    assert switches == {**SHIPPED, "jupyter_lsp": True, "x": False}
    assert rest == ["--debug", "--SingleUserNotebookApp.default_url=/lab", "--port=8888"]


def test_nothing_after_double_dash_is_an_option():
    argv = ["--", f"{OPTION}={{'jupyter_lsp': True}}"]
    assert split(session_args(argv, h5web=True)) == (SHIPPED, argv)


def test_other_traits_with_a_similar_name_are_not_ours():
    argv = ["--ServerApp.jpserver_extensions_x=1", "--NotebookApp.jpserver_extensions={'a': True}"]
    assert split(session_args(argv, h5web=True)) == (SHIPPED, argv)


def test_without_jupyterlab_h5web_site_switches_still_merged():
    assert split(session_args([f"{OPTION}={{'jupyter_lsp': True}}"], h5web=False)) == ({"jupyter_lsp": True}, [])


def test_inputs_not_changed():
    argv = [f"{OPTION}={{'jupyter_lsp': True}}", "--debug"]
    session_args(tuple(argv), h5web=True)
    session_args(argv, h5web=True)
    assert argv == [f"{OPTION}={{'jupyter_lsp': True}}", "--debug"]
    assert session_args(h5web=True) == (f"{OPTION}={SHIPPED!r}",)  # the shipped table is not changed either


@pytest.mark.parametrize(("argv", "named"), [
    ([f"{OPTION}={{jupyter_lsp: True}}"], f"{OPTION}={{jupyter_lsp: True}}"),  # a name not quoted
    ([f"{OPTION}={{'jupyter_lsp': 'yes'}}"], "'yes'"),  # not a boolean
    ([f"{OPTION}={{'jupyter_lsp': 1}}"], "'jupyter_lsp': 1"),
    ([f"{OPTION}={{1: True}}"], "{1: True}"),
    ([f"{OPTION}={{'jupyter_lsp', True}}"], "{'jupyter_lsp', True}"),  # a set, not a dict
    ([f"{OPTION}={{'a': True"], "{'a': True"),
    ([f"{OPTION}=jupyter_lsp"], f"{OPTION}=jupyter_lsp"),
    ([f"{OPTION}=jupyter_lsp=yes"], "jupyter_lsp=yes"),
    ([f"{OPTION}="], f"'{OPTION}='"),
    ([OPTION, "jupyter_lsp"], f"'{OPTION} jupyter_lsp'"),
    ([f"{OPTION}=True"], f"{OPTION}=True"),
    ([f"{OPTION}=None"], f"{OPTION}=None"),
])
def test_malformed_value_is_a_sentence_naming_the_argument(argv, named):
    with pytest.raises(ArgumentError) as e:
        session_args(argv, h5web=True)
    message = str(e.value)
    assert named in message and "cannot be used" in message, message
    assert "{'jupyter_lsp': True}" in message and "\n" not in message  # what to write instead, one line


def test_option_without_value():
    with pytest.raises(ArgumentError, match=f"^{OPTION} is the last argument and has no value"):
        session_args(["--debug", OPTION], h5web=True)


def test_both_hdf5_extensions_on_is_refused():
    with pytest.raises(ArgumentError) as e:
        session_args([f"{OPTION}={{'jupyterlab_h5web': True, 'daas_hub.lazy_h5web': True}}"], h5web=True)
    assert "jupyterlab_h5web and daas_hub.lazy_h5web" in str(e.value) and "/h5web/" in str(e.value)


@pytest.mark.parametrize("argv", [
    [f"{OPTION}={{jupyter_lsp: True}}"],
    ["--debug", OPTION],
])
def test_installed_command_exits_2_with_one_sentence(argv):
    """The installed console script, as the hub starts it: exit code 2, one line on stderr
    naming the argument, no traceback, and no server started (it stops before the import)."""
    r = subprocess.run([str(BIN / "daas-hub-singleuser"), *argv], capture_output=True, text=True, timeout=60,
                       cwd="/")
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("daas-hub-singleuser: ") and OPTION in lines[0], r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""
