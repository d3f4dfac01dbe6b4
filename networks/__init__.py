"""The shipped network zoo: .net files found by name (`netdsl compile vgg16`)."""
