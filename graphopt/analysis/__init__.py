"""What passes ask about a graph: shapes and types, symbolic shape values, constant evaluation,
and the cost model."""
