"""`make demo` fails loudly: any failing step makes students.demo exit non-zero. (The full demo
compiles a 64x64 student; it is run by `make demo`, not here.)"""
from compiler.commands import compile as compile_command
from compiler.commands import generate as generate_command
from students import demo
from compiler.errors import Exit


def test_trained_student_without_its_recipe_is_an_error(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # demo.main changes directory; monkeypatch restores it
    trained = tmp_path / "shapes-rf"
    trained.mkdir()
    (trained / "model_index.json").write_text("{}")
    monkeypatch.setattr(demo, "TRAINED", trained)
    monkeypatch.setattr(demo, "TRAINED_RECIPE", tmp_path / "missing.yaml")
    monkeypatch.setattr(compile_command, "main", lambda argv: (_ for _ in ()).throw(AssertionError("must not compile")))
    assert demo.main() == Exit.RECIPE
    assert "missing.yaml" in capsys.readouterr().err


def test_a_failing_compile_fails_the_demo(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(demo, "TRAINED", tmp_path / "no-trained-student")
    monkeypatch.setattr(demo, "_seeded_student", lambda: None)
    monkeypatch.setattr(compile_command, "main", lambda argv: Exit.PARITY)
    monkeypatch.setattr(generate_command, "main", lambda argv: (_ for _ in ()).throw(AssertionError("must not run")))
    assert demo.main() == Exit.PARITY
    assert "compile failed" in capsys.readouterr().err


def test_a_failing_generate_fails_the_demo(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(demo, "TRAINED", tmp_path / "no-trained-student")
    monkeypatch.setattr(demo, "IMAGES", tmp_path / "images")
    monkeypatch.setattr(demo, "_seeded_student", lambda: None)
    monkeypatch.setattr(compile_command, "main", lambda argv: Exit.OK)
    monkeypatch.setattr(generate_command, "main", lambda argv: Exit.BUNDLE)
    assert demo.main() == Exit.BUNDLE
    assert "generate failed" in capsys.readouterr().err
