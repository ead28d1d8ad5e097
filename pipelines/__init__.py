"""videor4.pipelines"""
