"""Tables and exporters: everything downstream of the analyzer."""
